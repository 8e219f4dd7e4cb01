//! What the compiler says about agents: each mistake a user makes names its
//! cause and the fix (`tests/ui/fail`, with the expected messages), and
//! everything the `#[agent]` attribute accepts compiles (`tests/ui/pass`).

#[test]
fn each_mistake_names_its_cause_and_fix() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
