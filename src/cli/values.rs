//! The one place where command-line words become the library's types.
//!
//! The CLI takes the library's own enums (`ListKind`, `HandlingMode`,
//! `eval`'s `Arrival` and `Profile`; the
//! train label is `--spam`/`--ham`, mapped in `LabelArg::label`) instead of
//! redefining them: clap's `ValueEnum` cannot be implemented here for types
//! of another crate, so each gets a parser listing its values, with the help
//! line each value shows in `--help`. The words are the library's `as_str`.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use chaff::eval::clicks::Profile;
use chaff::eval::multi::Arrival;
use chaff::policy::{HandlingMode, ListKind};

fn parser<T: Copy + Send + Sync + 'static>(
    values: &'static [(T, &'static str)],
    name: fn(T) -> &'static str,
) -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(
        values
            .iter()
            .map(|&(v, help)| PossibleValue::new(name(v)).help(help)),
    )
    .map(move |word: String| {
        values
            .iter()
            .map(|&(v, _)| v)
            .find(|&v| name(v) == word)
            .expect("clap checked the word against the same list")
    })
}

/// `--kind allow|block|trusted`.
pub(crate) fn list_kind() -> impl TypedValueParser<Value = ListKind> {
    const VALUES: &[(ListKind, &str)] = &[
        (
            ListKind::Allow,
            "Deliver (sender entries need the sender to authenticate)",
        ),
        (ListKind::Block, "File as spam, whatever the model says"),
        (
            ListKind::Trusted,
            "Operator-wide legitimate bulk senders (use with --operator)",
        ),
    ];
    parser(VALUES, ListKind::as_str)
}

/// `--mode passthrough|quarantine|reject`.
pub(crate) fn handling_mode() -> impl TypedValueParser<Value = HandlingMode> {
    const VALUES: &[(HandlingMode, &str)] = &[
        (
            HandlingMode::Passthrough,
            "Deliver everything; tag spam in headers only",
        ),
        (
            HandlingMode::Quarantine,
            "Spam to the spam folder (the default)",
        ),
        (
            HandlingMode::Reject,
            "Refuse spam at SMTP time at or above the reject threshold",
        ),
    ];
    parser(VALUES, HandlingMode::as_str)
}

/// `--arrival together|one-after-another` (multi-user `chaff eval`).
pub(crate) fn arrival() -> impl TypedValueParser<Value = Arrival> {
    const VALUES: &[(Arrival, &str)] = &[
        (Arrival::Together, "Every user starts at once (the default)"),
        (
            Arrival::OneAfterAnother,
            "Each user joins once the previous mailbox is done",
        ),
    ];
    parser(VALUES, Arrival::name)
}

/// `--profile diligent|typical|spam-only` (`chaff eval --train clicks`).
pub(crate) fn profile() -> impl TypedValueParser<Value = Profile> {
    const VALUES: &[(Profile, &str)] = &[
        (Profile::Diligent, "Clicks every misfiled message"),
        (Profile::Typical, "p = 0.5, q = 0.2 (the default)"),
        (
            Profile::SpamOnly,
            "p = 0.5, q = 0: never looks in the spam folder",
        ),
    ];
    parser(VALUES, Profile::name)
}

/// A finite number, 0 or more (`chaff serve`'s and `chaff eval`'s
/// scoring settings).
pub(crate) fn not_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number, 0 or more")),
    }
}
