//! vmunit-macros: the `#[vmunit::test]` attribute, which registers a function as a subtest.
//!
//! `#[vmunit::test]`, `#[vmunit::test(ignore)]`, `#[vmunit::test(should_fault)]` (any
//! exception) and `#[vmunit::test(should_fault = GP)]` (a `vmunit::Vector` of that name) put a
//! `vmunit::subtest::Subtest` into the `vmunit_tests` link section, which `vmunit::subtests!()`
//! walks, and `LINE:NAME` into `vmunit_test_names`, which the runner reads from the ELF.
//! It parses tokens directly: the grammar is a function and a few words, and a parser crate
//! would cost more build time than it saves.

use proc_macro::{Delimiter, TokenStream, TokenTree};

/// Registers `fn name()` as a subtest of a test crate that calls `vmunit::subtests!()`.
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
}

fn parse_options(attribute: TokenStream) -> Result<Options, String> {
    let mut options = Options {
        ignore: false,
        should_fault: None,
    };
    let tokens: Vec<TokenTree> = attribute.into_iter().collect();
    let mut index = 0;
    while index < tokens.len() {
        match &tokens[index] {
            TokenTree::Ident(word) if word.to_string() == "ignore" => options.ignore = true,
            TokenTree::Ident(word) if word.to_string() == "should_fault" => {
                let vector = match (tokens.get(index + 1), tokens.get(index + 2)) {
                    (Some(TokenTree::Punct(equals)), Some(TokenTree::Ident(vector)))
                        if equals.as_char() == '=' =>
                    {
                        index += 2;
                        Some(vector.to_string())
                    }
                    _ => None,
                };
                options.should_fault = Some(vector);
            }
            TokenTree::Punct(comma) if comma.as_char() == ',' => {}
            other => {
                return Err(format!(
                    "#[vmunit::test] takes `ignore`, `should_fault` or `should_fault = VECTOR`, not `{other}`"
                ));
            }
        }
        index += 1;
    }
    Ok(options)
}

/// The function's name (the identifier after `fn`, which must take no parameters) and the
/// source line it stands on.
fn function_name(item: &TokenStream) -> Result<(String, usize), String> {
    let tokens: Vec<TokenTree> = item.clone().into_iter().collect();
    let position = tokens
        .iter()
        .position(|token| matches!(token, TokenTree::Ident(word) if word.to_string() == "fn"))
        .ok_or("#[vmunit::test] goes on a function")?;
    let Some(TokenTree::Ident(name)) = tokens.get(position + 1) else {
        return Err("#[vmunit::test]: expected the function's name after `fn`".to_owned());
    };
    match tokens.get(position + 2) {
        Some(TokenTree::Group(parameters))
            if parameters.delimiter() == Delimiter::Parenthesis && parameters.stream().is_empty() =>
        {
            Ok((name.to_string(), name.span().line()))
        }
        _ => Err(format!("#[vmunit::test] fn {name} must take no parameters")),
    }
}

fn expand(attribute: TokenStream, item: TokenStream) -> Result<TokenStream, String> {
    let options = parse_options(attribute)?;
    let (name, line) = function_name(&item)?;
    let should_fault = match &options.should_fault {
        None => "vmunit::subtest::Fault::None".to_owned(),
        Some(None) => "vmunit::subtest::Fault::Any".to_owned(),
        Some(Some(vector)) => format!(
            "vmunit::subtest::Fault::Matching(|exception| exception.vector == vmunit::Vector::{vector}, \"{vector}\")"
        ),
    };
    // "LINE:NAME": the runner sorts by the zero-padded line, as subtests run in declared order.
    let listed = format!("{line:08}:{name}");
    let name_bytes = listed.len() + 1;
    let registration = format!(
        r#"
        #[allow(unsafe_code, non_upper_case_globals)]
        #[used]
        #[unsafe(link_section = "vmunit_tests")]
        static __vmunit_subtest_{name}: vmunit::subtest::Subtest = vmunit::subtest::Subtest {{
            name: "{name}",
            line: {line},
            function: {name},
            ignore: {ignore},
            should_fault: {should_fault},
        }};
        #[allow(unsafe_code, non_upper_case_globals)]
        #[used]
        #[unsafe(link_section = "vmunit_test_names")]
        static __vmunit_subtest_name_{name}: [u8; {name_bytes}] = *b"{listed}\0";
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
