/* The direct path's floor, as a C programmer would measure it: two
 * processes (fork), one loopback TCP connection with TCP_NODELAY, blocking
 * write-all then read-all of SIZE bytes each way, N round trips after N/10
 * warm-up ones. Prints one line: "<size> <p50 ns> <p99 ns>".
 * Built and run by benches/exchange.rs when `cc` is found:
 *   cc -O2 -o pingpong benches/pingpong.c && ./pingpong 100 5000
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void all(int fd, char *buf, size_t len, int writing) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = writing ? write(fd, buf + done, len - done) : read(fd, buf + done, len - done);
        if (n <= 0) exit(writing ? 2 : 0);
        done += (size_t)n;
    }
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: pingpong SIZE N\n"); return 1; }
    size_t size = strtoul(argv[1], 0, 10);
    int n = atoi(argv[2]), warm = n / 10 > 2 ? n / 10 : 2, one = 1;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    socklen_t len = sizeof addr;
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1)) return 1;
    getsockname(listener, (struct sockaddr *)&addr, &len);
    char *buf = malloc(size);
    memset(buf, 7, size);
    pid_t echo = fork();
    if (echo == 0) {
        int s = accept(listener, 0, 0);
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (;;) { all(s, buf, size, 0); all(s, buf, size, 1); }
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr)) return 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    long long *ns = malloc(sizeof(long long) * (size_t)n);
    for (int i = 0; i < n + warm; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        all(s, buf, size, 1);
        all(s, buf, size, 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (i >= warm) ns[i - warm] = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    }
    close(s);
    waitpid(echo, 0, 0);
    qsort(ns, (size_t)n, sizeof *ns, cmp);
    printf("%zu %lld %lld\n", size, ns[n / 2], ns[(size_t)n * 99 / 100]);
    return 0;
}
