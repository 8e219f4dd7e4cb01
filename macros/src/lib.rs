//! The `#[agent]` attribute of [actix-academy](https://docs.rs/actix-academy):
//! the `#[action]` methods of an ordinary Actix actor's impl block become
//! actions other processes call through a typed `RemoteHandle`.
//!
//! Use it through `actix_academy::agent`; its documentation is there.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, LitStr, Pat, Path, PathArguments,
    ReturnType, Type,
};

/// Makes an Actix actor an agent: see `actix_academy::agent`.
#[proc_macro_attribute]
pub fn agent(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| options.parse(meta));
    if let Err(e) = parser.parse(attr) {
        return e.to_compile_error().into();
    }
    match syn::parse::<ItemImpl>(item).and_then(|block| expand(options, block)) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Marks a method of an `#[agent]` impl block as an action; alone, an error.
#[proc_macro_attribute]
pub fn action(_: TokenStream, item: TokenStream) -> TokenStream {
    let mut tokens = Error::new(
        Span::call_site(),
        "`#[action]` marks a method inside an impl block that has `#[actix_academy::agent]` on it",
    )
    .to_compile_error();
    tokens.extend(Tokens::from(item));
    tokens.into()
}

/// `#[derive(Actor)]`: an actor on Actix's default `Context<Self>`; see
/// `actix_academy::Actor`.
#[proc_macro_derive(Actor)]
pub fn derive_actor(item: TokenStream) -> TokenStream {
    let input = match syn::parse::<syn::DeriveInput>(item) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error().into(),
    };
    let (name, (generics, arguments, bounds)) = (&input.ident, input.generics.split_for_impl());
    let actix = quote!(::actix_academy::__private::actix);
    quote! {
        impl #generics #actix::Actor for #name #arguments #bounds {
            type Context = #actix::Context<Self>;
        }
    }
    .into()
}

/// `#[agent(name = "market", implements(Exchange))]`.
#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    implements: Vec<Path>,
}

impl Options {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("name") {
            let name: LitStr = meta.value()?.parse()?;
            if name.value().is_empty() || name.value().contains(',') {
                return Err(Error::new(name.span(), "a behavior name is not empty and has no comma"));
            }
            self.name = Some(name);
            Ok(())
        } else if meta.path.is_ident("implements") {
            meta.parse_nested_meta(|parent| {
                self.implements.push(parent.path);
                Ok(())
            })
        } else {
            Err(meta.error("expected `name = \"...\"` or `implements(Behavior, ...)`"))
        }
    }
}

/// Methods of `RemoteHandle` an action's method may not shadow.
const HANDLE_METHODS: &[&str] = &[
    "action",
    "action_timeout",
    "agent_id",
    "clone",
    "close",
    "describe",
    "mailbox_id",
    "ping",
    "queue_when_inactive",
    "shutdown",
    "shutdown_with",
    "unbound",
    "with_liveness_timeout",
    "with_timeout",
    // Trait methods that reach a handle before `Deref` does.
    "clone_from",
    "clone_into",
    "into",
    "to_owned",
    "try_into",
];

/// Action names the runtime answers itself.
const RESERVED_ACTIONS: &[&str] = &["agent_describe"];

/// What a parameter of an action method receives.
enum Param {
    /// An argument from the caller: travels over the wire.
    Argument { name: syn::Ident, ty: Box<Type> },
    /// The agent's context (`&AgentContext<Self>`, or by value).
    Context { by_ref: bool },
    /// The caller's id (`#[caller] who: &EntityId`, or by value).
    Caller { by_ref: bool },
    /// Actix's `&mut Context<Self>`.
    ActorContext,
}

/// One `#[action]` method, analysed.
struct Action {
    method: syn::Ident,
    wire: LitStr,
    docs: Vec<Attribute>,
    params: Vec<Param>,
    /// What the caller gets: the value the action produces.
    output: Type,
    /// The return type as the method declares it.
    output_declared: Tokens,
    /// The method returns an Actix response type (`ResponseFuture<T>`...).
    response: bool,
    asynchronous: bool,
    one_way: bool,
    has_receiver: bool,
}

fn expand(options: Options, mut block: ItemImpl) -> syn::Result<Tokens> {
    if let Some((_, path, _)) = &block.trait_ {
        return Err(Error::new(path.span(), "`#[agent]` goes on the actor's own impl block, not on a trait impl"));
    }
    if !block.generics.params.is_empty() {
        return Err(Error::new(block.generics.span(), "an agent's impl block cannot be generic"));
    }
    let self_ty = (*block.self_ty).clone();
    let Type::Path(type_path) = &self_ty else {
        return Err(Error::new(self_ty.span(), "`#[agent]` goes on `impl YourActor { ... }`"));
    };
    let type_ident = type_path.path.segments.last().expect("a type path has a segment").ident.clone();

    let mut actions = Vec::new();
    // Methods with a receiver but no `#[action]`: a handle call to one of
    // them is told what is missing.
    let mut not_actions: Vec<syn::Ident> = Vec::new();
    let mut errors: Option<Error> = None;
    let mut push_error = |e: Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    for item in &mut block.items {
        let ImplItem::Fn(method) = item else { continue };
        let is_action = |a: &Attribute| a.path().segments.last().is_some_and(|s| s.ident == "action");
        let Some(at) = method.attrs.iter().position(is_action) else {
            if method.sig.receiver().is_some() {
                not_actions.push(method.sig.ident.clone());
            }
            continue;
        };
        let attr = method.attrs.remove(at);
        match analyse(&attr, method, &self_ty) {
            Ok(action) => actions.push(action),
            Err(e) => push_error(e),
        }
        // `#[caller]` is this macro's; the method keeps its parameter.
        for input in &mut method.sig.inputs {
            if let FnArg::Typed(typed) = input {
                typed.attrs.retain(|a| !a.path().is_ident("caller"));
            }
        }
    }
    // A second action of one name is reported and left out.
    let mut distinct: Vec<Action> = Vec::new();
    for action in actions {
        match distinct.iter().find(|a| a.wire.value() == action.wire.value()) {
            Some(first) => push_error(Error::new(
                action.wire.span(),
                format!(
                    "two actions named {:?} in one behavior (`{}` and `{}`): name one with `#[action(name = \"...\")]`",
                    action.wire.value(),
                    first.method,
                    action.method
                ),
            )),
            None => distinct.push(action),
        }
    }
    let actions = distinct;
    // One mistake, one error: the behavior is still written, with the
    // actions in error left out (their methods stay plain methods), so the
    // rest of the program does not fail for want of it.
    let errors = errors.map(|e| e.to_compile_error());

    let krate = quote!(::actix_academy);
    let private = quote!(#krate::__private);
    let actix = quote!(#private::actix);
    let name = options.name.unwrap_or_else(|| LitStr::new(&type_ident.to_string(), type_ident.span()));
    let calls = format_ident!("{}Calls", type_ident);
    let parents = &options.implements;

    let mut messages = Tokens::new();
    let mut arms = Tokens::new();
    let mut infos = Tokens::new();
    let mut methods = Tokens::new();
    for action in &actions {
        // Spanned at the result type: what fails on it (it cannot travel, no
        // serde derives) is reported at the method that returns it.
        let message = format_ident!("__{}_{}", type_ident, action.method, span = action.output.span());
        let wire = &action.wire;
        let output = &action.output;
        let arg_types: Vec<&Type> = action.arguments().map(|(_, ty)| ty).collect();
        let arg_names: Vec<&syn::Ident> = action.arguments().map(|(name, _)| name).collect();
        let slots: Vec<syn::Ident> = (0..arg_types.len()).map(|i| format_ident!("__arg{}", i)).collect();
        let passed: Vec<Tokens> = {
            let mut slot = slots.iter();
            action
                .params
                .iter()
                .map(|param| match param {
                    Param::Argument { .. } => slot.next().expect("one slot per argument").to_token_stream(),
                    Param::Context { by_ref: true } => quote!(&__call.context),
                    Param::Context { by_ref: false } => quote!(__call.context.clone()),
                    Param::Caller { by_ref: true } => quote!(&__call.caller),
                    Param::Caller { by_ref: false } => quote!(__call.caller.clone()),
                    Param::ActorContext => quote!(__ctx),
                })
                .collect()
        };
        let method = &action.method;
        let receiver = action.has_receiver.then(|| quote!(self,));
        let invoke = quote!(<#self_ty>::#method(#receiver #(#passed),*));
        let (handler_result, body) = if action.asynchronous {
            (quote!(#actix::ResponseFuture<#output>), quote!(::std::boxed::Box::pin(#invoke)))
        } else if action.response {
            (action.output_declared.clone(), invoke)
        } else {
            (quote!(#actix::MessageResult<#message>), quote!(#actix::MessageResult(#invoke)))
        };
        messages.extend(quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            struct #message {
                args: (#(#arg_types,)*),
                call: #private::Invocation<#self_ty>,
            }
            impl #actix::Message for #message {
                type Result = #output;
            }
            impl #actix::Handler<#message> for #self_ty {
                type Result = #handler_result;
                #[allow(unused_variables, clippy::unused_unit)]
                fn handle(&mut self, __message: #message, __ctx: &mut #actix::Context<Self>) -> Self::Result {
                    let (#(#slots,)*) = __message.args;
                    let __call = __message.call;
                    #body
                }
            }
        });
        arms.extend(if action.asynchronous {
            // Run in the runtime's own future, not handed to the actor: a
            // cancel drops it, and the action stops at its next await.
            quote! {
                #wire => ::std::option::Option::Some(#private::dispatch_async::<Self, (#(#arg_types,)*), _>(
                    action, args, call, |(#(#slots,)*), __call| <#self_ty>::#method(#(#passed),*),
                )),
            }
        } else {
            // Spanned at the result type: one that cannot travel (no serde
            // derives) is reported at the method that returns it.
            let dispatch = quote_spanned!(output.span()=> #private::dispatch::<Self, (#(#arg_types,)*), #message>);
            quote! {
                #wire => ::std::option::Option::Some(#dispatch(
                    addr, action, args, call, |args, call| #message { args, call },
                )),
            }
        });
        let doc = action.doc_text();
        let one_way = action.one_way;
        let result_text = type_text(output);
        let parameters = action.arguments().map(|(name, ty)| {
            let (name, ty) = (name.to_string(), type_text(ty));
            quote!(#krate::Parameter::new(#name, #ty))
        });
        let parameters = quote!({ const PARAMETERS: &[#krate::Parameter] = &[#(#parameters),*]; PARAMETERS });
        infos.extend(match split_result(output) {
            Some((_, error)) if !action.one_way => {
                let error = type_text(&error);
                quote!(#krate::ActionInfo::fallible(#wire, #parameters, #result_text, #doc, #error),)
            }
            _ => quote!(#krate::ActionInfo::new(#wire, #parameters, #result_text, #one_way, #doc),),
        });
        let docs = &action.docs;
        let call = if action.one_way {
            quote! {
                pub async fn #method(&self #(, #arg_names: #arg_types)*) -> ::std::result::Result<(), #krate::Error> {
                    self.0.__tell(#wire, &(#(#arg_names,)*)).await
                }
            }
        } else if let Some((value, error)) = split_result(output) {
            let error_text = type_text(&error);
            quote! {
                pub async fn #method(&self #(, #arg_names: #arg_types)*) -> ::std::result::Result<#value, #krate::ActionError<#error>> {
                    self.0.__call_fallible(#wire, #error_text, &(#(#arg_names,)*)).await
                }
            }
        } else {
            let call = quote_spanned!(output.span()=> self.0.__call);
            quote! {
                pub async fn #method(&self #(, #arg_names: #arg_types)*) -> ::std::result::Result<#output, #krate::Error> {
                    #call(#wire, &(#(#arg_names,)*)).await
                }
            }
        };
        methods.extend(quote! {
            #(#docs)*
            #call
        });
    }

    let calls_doc = format!("The actions of [`{type_ident}`], called through a `RemoteHandle<{type_ident}>`.");
    let lineage = lineage(&krate, parents);
    Ok(quote! {
        #block

        #messages

        #[doc = #calls_doc]
        #[derive(Clone)]
        pub struct #calls(#private::Caller<#self_ty>);

        impl #private::Calls<#self_ty> for #calls {
            fn from_caller(caller: #private::Caller<#self_ty>) -> Self {
                Self(caller)
            }
            fn caller(&self) -> &#private::Caller<#self_ty> {
                &self.0
            }
            fn caller_mut(&mut self) -> &mut #private::Caller<#self_ty> {
                &mut self.0
            }
        }

        impl ::std::fmt::Debug for #calls {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(&self.0, f)
            }
        }

        // The methods take the action's argument types, which may be
        // private to the user's module.
        // Methods a program that only serves agents never calls.
        #[allow(clippy::too_many_arguments, private_interfaces, dead_code)]
        impl #calls {
            #methods
            #(
                #[doc(hidden)]
                pub fn #not_actions(&self) -> ::std::future::Ready<()>
                where
                    for<'__a> &'__a (): #private::NotAnAction,
                {
                    ::std::unreachable!()
                }
            )*
        }

        impl #krate::Behavior for #self_ty {
            type Calls = #calls;

            fn name() -> &'static str {
                #name
            }

            #lineage

            fn actions() -> &'static [#krate::ActionInfo] {
                const ACTIONS: &[#krate::ActionInfo] = &[#infos];
                ACTIONS
            }

            fn dispatch(
                addr: &#actix::Addr<Self>,
                action: &str,
                args: &[u8],
                call: #private::Invocation<Self>,
            ) -> ::std::option::Option<#private::ActionFuture> {
                match action {
                    #arms
                    _ => {
                        let _ = (addr, args, call);
                        ::std::option::Option::None
                    }
                }
            }
        }

        impl #actix::Handler<#private::StopAgent> for #self_ty {
            type Result = ();
            fn handle(&mut self, _: #private::StopAgent, ctx: &mut #actix::Context<Self>) {
                #actix::ActorContext::stop(ctx);
            }
        }

        impl #actix::Handler<#private::Update<Self>> for #self_ty {
            type Result = ();
            fn handle(&mut self, update: #private::Update<Self>, _: &mut #actix::Context<Self>) {
                update.apply(self);
            }
        }

        #errors
    })
}

/// `fn lineage()`: the behavior's name, then its parents' lineages.
fn lineage(krate: &Tokens, parents: &[Path]) -> Tokens {
    if parents.is_empty() {
        return Tokens::new();
    }
    quote! {
        fn lineage() -> ::std::vec::Vec<&'static str> {
            let mut lineage = ::std::vec![<Self as #krate::Behavior>::name()];
            #(
                for name in <#parents as #krate::Behavior>::lineage() {
                    if !lineage.contains(&name) {
                        lineage.push(name);
                    }
                }
            )*
            lineage
        }
    }
}

impl Action {
    fn arguments(&self) -> impl Iterator<Item = (&syn::Ident, &Type)> {
        self.params.iter().filter_map(|param| match param {
            Param::Argument { name, ty } => Some((name, &**ty)),
            _ => None,
        })
    }

    /// The method's doc comment, as one string.
    fn doc_text(&self) -> String {
        let lines: Vec<String> = self
            .docs
            .iter()
            .filter_map(|attr| match &attr.meta {
                syn::Meta::NameValue(nv) => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value().trim().to_owned()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        lines.join("\n").trim().to_owned()
    }
}

/// Reads one `#[action]` method.
fn analyse(attr: &Attribute, method: &ImplItemFn, self_ty: &Type) -> syn::Result<Action> {
    let sig = &method.sig;
    let mut wire = None;
    let mut one_way = false;
    if !matches!(attr.meta, syn::Meta::Path(_)) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let name: LitStr = meta.value()?.parse()?;
                if name.value().is_empty() {
                    return Err(Error::new(name.span(), "an action's name cannot be empty"));
                }
                wire = Some(name);
                Ok(())
            } else if meta.path.is_ident("one_way") {
                one_way = true;
                Ok(())
            } else {
                Err(meta.error("expected `name = \"...\"` or `one_way`"))
            }
        })?;
    }
    if let Some(cfg) = method.attrs.iter().find(|a| a.path().is_ident("cfg")) {
        return Err(Error::new(
            cfg.span(),
            "an action cannot be conditional: every build of a behavior must offer the same actions",
        ));
    }
    let method_name = sig.ident.to_string();
    if HANDLE_METHODS.contains(&method_name.as_str()) {
        return Err(Error::new(
            sig.ident.span(),
            format!(
                "an action method cannot be called `{method_name}`: `RemoteHandle` has a method of that name; \
                 rename the method (`#[action(name = \"{method_name}\")]` keeps the name on the wire)"
            ),
        ));
    }
    let wire = wire.unwrap_or_else(|| LitStr::new(&method_name, sig.ident.span()));
    if RESERVED_ACTIONS.contains(&wire.value().as_str()) {
        return Err(Error::new(wire.span(), format!("the action name {:?} is reserved by the runtime", wire.value())));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(sig.generics.span(), "an action cannot be generic: its types travel over the wire"));
    }
    let asynchronous = sig.asyncness.is_some();
    let mut has_receiver = false;
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                if receiver.reference.is_none() {
                    return Err(Error::new(receiver.span(), "an action takes `&mut self` or `&self`, not `self`"));
                }
                if asynchronous {
                    return Err(Error::new(
                        receiver.span(),
                        "an `async` action cannot borrow the actor: Actix lends a handler `self` only until it \
                         returns. Take no `self` (an `AgentContext<Self>` argument reaches the agent), or write a \
                         sync method that returns `ResponseFuture<T>` or `ResponseActFuture<Self, T>`",
                    ));
                }
                has_receiver = true;
            }
            FnArg::Typed(typed) => params.push(param(typed, asynchronous, params.len(), self_ty)?),
        }
    }
    let (output_declared, output, response) = match &sig.output {
        ReturnType::Default => (quote!(()), syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => match response_output(ty) {
            Some(output) if !asynchronous => (ty.to_token_stream(), output, true),
            _ => (ty.to_token_stream(), (**ty).clone(), false),
        },
    };
    // Generated items are not the actor: `Self` in a type becomes its name.
    let output = outside(&output, self_ty)?;
    if one_way && !is_unit(&output) {
        return Err(Error::new(
            sig.output.span(),
            "a one-way action returns nothing: its caller does not wait for a result",
        ));
    }
    let docs = method.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect();
    Ok(Action {
        method: sig.ident.clone(),
        wire,
        docs,
        params,
        output,
        output_declared,
        response,
        asynchronous,
        one_way,
        has_receiver,
    })
}

/// Reads one typed parameter: an argument, or something the runtime passes.
fn param(typed: &syn::PatType, asynchronous: bool, index: usize, self_ty: &Type) -> syn::Result<Param> {
    let is_caller = typed.attrs.iter().any(|a| a.path().is_ident("caller"));
    let (by_ref, mutable, inner) = match &*typed.ty {
        Type::Reference(r) => (true, r.mutability.is_some(), &*r.elem),
        other => (false, false, other),
    };
    let last = match inner {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    if is_caller {
        if mutable || last.as_deref() != Some("EntityId") {
            return Err(Error::new(typed.ty.span(), "a `#[caller]` parameter is an `EntityId` or an `&EntityId`"));
        }
        if by_ref && asynchronous {
            return Err(Error::new(
                typed.ty.span(),
                "an async action takes the caller by value: `#[caller] who: EntityId`",
            ));
        }
        return Ok(Param::Caller { by_ref });
    }
    match last.as_deref() {
        Some("AgentContext") => {
            if mutable {
                return Err(Error::new(typed.ty.span(), "the agent's context is `&AgentContext<Self>`, not `&mut`"));
            }
            if by_ref && asynchronous {
                return Err(Error::new(
                    typed.ty.span(),
                    "an async action takes the agent's context by value: `ctx: AgentContext<Self>`",
                ));
            }
            return Ok(Param::Context { by_ref });
        }
        Some("Context") if by_ref => {
            if asynchronous {
                return Err(Error::new(typed.ty.span(), "an async action cannot borrow the actor's `Context`"));
            }
            if !mutable {
                return Err(Error::new(typed.ty.span(), "the actor's context is `&mut Context<Self>`"));
            }
            return Ok(Param::ActorContext);
        }
        _ => {}
    }
    if by_ref {
        return Err(Error::new(
            typed.ty.span(),
            "an action's arguments travel over the network, so they are owned: `String`, not `&str`; \
             `Vec<T>`, not `&[T]`",
        ));
    }
    let name = match &*typed.pat {
        Pat::Ident(ident) => ident.ident.clone(),
        _ => format_ident!("arg{}", index),
    };
    Ok(Param::Argument { name, ty: Box::new(outside(&typed.ty, self_ty)?) })
}

/// `T` of `ResponseFuture<T>`, `ResponseActFuture<A, T>`, `AtomicResponse<A, T>`
/// or `ActorResponse<A, T>`.
fn response_output(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if !matches!(
        last.ident.to_string().as_str(),
        "ResponseFuture" | "ResponseActFuture" | "AtomicResponse" | "ActorResponse"
    ) {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    args.args.iter().rev().find_map(|arg| match arg {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    })
}

/// `(T, E)` of a `Result<T, E>` written out.
fn split_result(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    let types: Vec<Type> = args
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    match <[Type; 2]>::try_from(types) {
        Ok([value, error]) => Some((value, error)),
        Err(_) => None,
    }
}

/// `ty` with `Self` spelled as the actor's type, for use outside its impl.
fn outside(ty: &Type, self_ty: &Type) -> syn::Result<Type> {
    fn replace(tokens: Tokens, self_ty: &Tokens) -> Tokens {
        tokens
            .into_iter()
            .flat_map(|tree| match tree {
                proc_macro2::TokenTree::Ident(ident) if ident == "Self" => self_ty.clone(),
                proc_macro2::TokenTree::Group(group) => {
                    let mut new = proc_macro2::Group::new(group.delimiter(), replace(group.stream(), self_ty));
                    new.set_span(group.span());
                    proc_macro2::TokenTree::Group(new).into()
                }
                other => other.into(),
            })
            .collect()
    }
    syn::parse2(replace(ty.to_token_stream(), &self_ty.to_token_stream()))
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// A type as a reader writes it (`Vec<u8>`, not `Vec < u8 >`).
fn type_text(ty: &Type) -> String {
    let text = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' {
            let next = chars.peek().copied();
            let prev = out.chars().last();
            let glue = matches!(next, Some('<' | '>' | ',' | ')' | ']' | ':'))
                || matches!(prev, Some('<' | '(' | '[' | '&' | ':'));
            if glue {
                continue;
            }
        }
        out.push(c);
    }
    out
}
