//! vmunit-macros: the `#[vmunit::test]` attribute, which registers a function as a subtest.
//!
//! `#[vmunit::test]`, `#[vmunit::test(ignore)]`, `#[vmunit::test(should_fault)]` (any
//! exception), `#[vmunit::test(should_fault = GP)]` (a `vmunit::Vector` of that name),
//! `#[vmunit::test(cases = TABLE)]` (once per case) and `#[vmunit::test(timeout_ms = N)]` put
//! a `vmunit::subtest::Subtest` into the `vmunit_tests` link section, which
//! `vmunit::subtests!()` walks, and `LINE:NAME` into `vmunit_test_names`, which the runner
//! reads from the ELF. The subtest's `Body` is a generated function that borrows the suite
//! state as the marked function takes it and runs it once, or once per case.
//! It parses tokens directly: the grammar is a function and a few words, and a parser crate
//! would cost more build time than it saves.

use proc_macro::{Delimiter, TokenStream, TokenTree};
use vmunit_protocol::{SUBTEST_NAMES_SECTION, SUBTESTS_SECTION, SubtestRecord};

/// Registers a function as a subtest of a test crate that calls `vmunit::subtests!()` (see
/// `vmunit::test` for the forms it takes).
#[proc_macro_attribute]
pub fn test(attribute: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attribute, item) {
        Ok(stream) => stream,
        Err(message) => format!("compile_error!({message:?});")
            .parse()
            .unwrap_or_default(),
    }
}

/// What the attribute's arguments ask for.
struct Options {
    ignore: bool,
    /// `None`: must not fault; `Some(None)`: any exception; `Some(Some(vector))`: that one.
    should_fault: Option<Option<String>>,
    /// `cases = TABLE`: the expression naming the table of cases.
    cases: Option<String>,
    /// `timeout_ms = N`.
    timeout_milliseconds: Option<u64>,
}

const USAGE: &str = "#[vmunit::test] takes `ignore`, `should_fault`, `should_fault = VECTOR`, `cases = TABLE` or `timeout_ms = MILLISECONDS`";

fn parse_options(attribute: TokenStream) -> Result<Options, String> {
    let mut options = Options {
        ignore: false,
        should_fault: None,
        cases: None,
        timeout_milliseconds: None,
    };
    let tokens: Vec<TokenTree> = attribute.into_iter().collect();
    // Options are separated by top-level commas; each is a word, or `word = value`.
    for option in tokens.split(|token| matches!(token, TokenTree::Punct(comma) if comma.as_char() == ',')) {
        let (word, value) = match option {
            [] => continue,
            [TokenTree::Ident(word)] => (word.to_string(), None),
            [TokenTree::Ident(word), TokenTree::Punct(equals), value @ ..]
                if equals.as_char() == '=' && !value.is_empty() =>
            {
                (
                    word.to_string(),
                    Some(value.iter().cloned().collect::<TokenStream>()),
                )
            }
            other => {
                let text: TokenStream = other.iter().cloned().collect();
                return Err(format!("{USAGE}, not `{text}`"));
            }
        };
        match (word.as_str(), value) {
            ("ignore", None) => options.ignore = true,
            ("should_fault", None) => options.should_fault = Some(None),
            ("should_fault", Some(vector)) => options.should_fault = Some(Some(vector.to_string())),
            ("cases", Some(table)) => options.cases = Some(table.to_string()),
            ("timeout_ms", Some(milliseconds)) => {
                let text = milliseconds.to_string().replace('_', "");
                let bound = text
                    .parse()
                    .map_err(|_| format!("#[vmunit::test]: timeout_ms takes a whole number of milliseconds, not `{milliseconds}`"))?;
                options.timeout_milliseconds = Some(bound);
            }
            (word, _) => return Err(format!("{USAGE}, not `{word}` in that form")),
        }
    }
    Ok(options)
}

/// How a subtest function takes the suite state: not at all, by `&State` or by `&mut State`.
enum StateParameter {
    None,
    Shared(String),
    Exclusive(String),
}

/// A subtest function's signature, as far as the registration needs it.
struct Signature {
    name: String,
    line: usize,
    state: StateParameter,
    /// Whether it takes a case (the last parameter).
    takes_case: bool,
}

/// The parameters' types, split at top-level commas (a `<..>` is not a group for the lexer).
fn parameter_types(parameters: TokenStream) -> Result<Vec<Vec<TokenTree>>, String> {
    let mut list = Vec::new();
    let mut current = Vec::new();
    let mut depth = 0usize;
    for token in parameters {
        match &token {
            TokenTree::Punct(punct) if punct.as_char() == '<' => depth += 1,
            TokenTree::Punct(punct) if punct.as_char() == '>' => depth = depth.saturating_sub(1),
            TokenTree::Punct(punct) if punct.as_char() == ',' && depth == 0 => {
                list.push(core::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(token);
    }
    if !current.is_empty() {
        list.push(current);
    }
    list.into_iter()
        .map(|parameter| {
            let colon = parameter
                .iter()
                .position(|token| matches!(token, TokenTree::Punct(colon) if colon.as_char() == ':'))
                .ok_or("#[vmunit::test]: a parameter without a type")?;
            Ok(parameter[colon + 1..].to_vec())
        })
        .collect()
}

/// The state parameter's form, from its type's tokens: `&State` or `&mut State`.
fn state_parameter(name: &str, parameter_type: &[TokenTree]) -> Result<StateParameter, String> {
    match parameter_type {
        [TokenTree::Punct(and), TokenTree::Ident(word), rest @ ..]
            if and.as_char() == '&' && word.to_string() == "mut" && !rest.is_empty() =>
        {
            Ok(StateParameter::Exclusive(
                rest.iter().cloned().collect::<TokenStream>().to_string(),
            ))
        }
        [TokenTree::Punct(and), rest @ ..] if and.as_char() == '&' && !rest.is_empty() => Ok(
            StateParameter::Shared(rest.iter().cloned().collect::<TokenStream>().to_string()),
        ),
        _ => Err(format!(
            "#[vmunit::test] fn {name}: the suite state is borrowed, `&State` or `&mut State`"
        )),
    }
}

/// The function's name, source line and parameters: none; the suite state; with `cases`,
/// the case, after the state if it takes that too.
fn signature(item: &TokenStream, with_cases: bool) -> Result<Signature, String> {
    let tokens: Vec<TokenTree> = item.clone().into_iter().collect();
    let position = tokens
        .iter()
        .position(|token| matches!(token, TokenTree::Ident(word) if word.to_string() == "fn"))
        .ok_or("#[vmunit::test] goes on a function")?;
    let Some(TokenTree::Ident(name)) = tokens.get(position + 1) else {
        return Err("#[vmunit::test]: expected the function's name after `fn`".to_owned());
    };
    let name_text = name.to_string();
    let Some(TokenTree::Group(parameters)) = tokens.get(position + 2) else {
        return Err(format!(
            "#[vmunit::test] fn {name}: expected its parameters (a generic subtest cannot run)"
        ));
    };
    if parameters.delimiter() != Delimiter::Parenthesis {
        return Err(format!("#[vmunit::test] fn {name}: expected its parameters"));
    }
    let types = parameter_types(parameters.stream())?;
    let (state, takes_case) = match (with_cases, types.as_slice()) {
        (false, []) => (StateParameter::None, false),
        (false, [state]) => (state_parameter(&name_text, state)?, false),
        (true, [_case]) => (StateParameter::None, true),
        (true, [state, _case]) => (state_parameter(&name_text, state)?, true),
        (false, _) => {
            return Err(format!(
                "#[vmunit::test] fn {name} takes no parameters, or the suite state (`&State`); a case only with `cases = TABLE`"
            ));
        }
        (true, _) => {
            return Err(format!(
                "#[vmunit::test(cases = ..)] fn {name} takes the case (`case: &Case`), after the suite state if it takes that"
            ));
        }
    };
    Ok(Signature {
        name: name_text,
        line: name.span().line(),
        state,
        takes_case,
    })
}

/// The body of the generated `vmunit::subtest::Body` function: borrow the state, then run the
/// subtest once or once per case.
fn body(signature: &Signature, cases: Option<&str>) -> String {
    let name = &signature.name;
    let (borrow, argument) = match &signature.state {
        StateParameter::None => (String::new(), ""),
        StateParameter::Shared(state_type) => (
            format!(
                "let ::core::option::Option::Some(state) = harness.state::<{state_type}>(state) else {{ return; }};"
            ),
            "&*state",
        ),
        StateParameter::Exclusive(state_type) => (
            format!(
                "let ::core::option::Option::Some(state) = harness.state::<{state_type}>(state) else {{ return; }};"
            ),
            "&mut *state",
        ),
    };
    let run = match cases {
        Some(table) if signature.takes_case => {
            let arguments = if argument.is_empty() {
                "case".to_owned()
            } else {
                format!("{argument}, case")
            };
            format!("for case in ({table}).iter() {{ harness.run_case(case, || {name}({arguments})); }}")
        }
        _ => format!("harness.run(|| {name}({argument}));"),
    };
    format!("{borrow} {run}")
}

fn expand(attribute: TokenStream, item: TokenStream) -> Result<TokenStream, String> {
    let options = parse_options(attribute)?;
    let signature = signature(&item, options.cases.is_some())?;
    let Signature { name, line, .. } = &signature;
    let should_fault = match &options.should_fault {
        None => "vmunit::subtest::Fault::None".to_owned(),
        Some(None) => "vmunit::subtest::Fault::Any".to_owned(),
        Some(Some(vector)) => {
            format!("vmunit::subtest::Fault::Vector(vmunit::Vector::{vector}, \"{vector}\")")
        }
    };
    let timeout = match options.timeout_milliseconds {
        Some(bound) => format!("::core::option::Option::Some({bound})"),
        None => "::core::option::Option::None".to_owned(),
    };
    let body = body(&signature, options.cases.as_deref());
    // "LINE:NAME": the runner sorts by the zero-padded line, as subtests run in declared order.
    let record_line = u32::try_from(*line).map_err(|_| format!("line {line} is too large"))?;
    let listed = SubtestRecord {
        line: record_line,
        name: &name.to_string(),
    }
    .to_string();
    let name_bytes = listed.len() + 1;
    let registration = format!(
        r#"
        #[allow(unsafe_code, non_upper_case_globals)]
        #[used]
        #[unsafe(link_section = "{SUBTESTS_SECTION}")]
        static __vmunit_subtest_{name}: vmunit::subtest::Subtest = vmunit::subtest::Subtest {{
            name: "{name}",
            line: {line},
            body: __vmunit_body_{name},
            ignore: {ignore},
            should_fault: {should_fault},
            timeout_milliseconds: {timeout},
        }};
        #[allow(unsafe_code, non_upper_case_globals)]
        #[used]
        #[unsafe(link_section = "{SUBTEST_NAMES_SECTION}")]
        static __vmunit_subtest_name_{name}: [u8; {name_bytes}] = *b"{listed}\0";
        #[allow(unused_variables, non_snake_case)]
        fn __vmunit_body_{name}(state: &mut dyn ::core::any::Any, harness: &vmunit::subtest::Harness<'_>) {{
            {body}
        }}
        "#,
        ignore = options.ignore,
    );
    let mut stream = item;
    stream.extend(
        registration
            .parse::<TokenStream>()
            .map_err(|error| error.to_string())?,
    );
    Ok(stream)
}
