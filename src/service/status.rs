//! The one place library errors become gRPC statuses, and wire enums become
//! library types. Messages are written for the person reading a client log.

use tonic::Status;

use crate::error::Error;
use crate::proto;
use crate::types::{Label, Verdict};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::MessageTooLarge { .. } => Status::resource_exhausted(msg),
            Error::NotLearned { .. } => Status::not_found(msg),
            // Storage trouble is the server's, not the request's: the caller
            // may retry later or elsewhere. The request was not applied.
            Error::Storage(_) => {
                Status::unavailable(format!("{msg}; the request was not applied, retry later"))
            }
            Error::Corrupt { .. } | Error::Open { .. } => Status::internal(msg),
        }
    }
}

/// LABEL_UNSPECIFIED (and unknown numbers) are refused, never guessed.
pub fn label_from_wire(value: i32) -> Result<Label, Status> {
    match proto::Label::try_from(value) {
        Ok(proto::Label::Spam) => Ok(Label::Spam),
        Ok(proto::Label::Ham) => Ok(Label::Ham),
        Ok(proto::Label::Unspecified) => Err(Status::invalid_argument(
            "label is unspecified; set LABEL_SPAM or LABEL_HAM",
        )),
        Err(_) => Err(Status::invalid_argument(format!(
            "label {value} is unknown; set LABEL_SPAM or LABEL_HAM"
        ))),
    }
}

pub fn label_to_wire(label: Label) -> proto::Label {
    match label {
        Label::Spam => proto::Label::Spam,
        Label::Ham => proto::Label::Ham,
    }
}

pub fn verdict_to_wire(v: Verdict) -> proto::Verdict {
    match v {
        Verdict::Ham => proto::Verdict::Ham,
        Verdict::Unsure => proto::Verdict::Unsure,
        Verdict::Spam => proto::Verdict::Spam,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn errors_map_to_actionable_codes() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (
                Error::MessageTooLarge { size: 2, limit: 1 },
                Code::ResourceExhausted,
            ),
            (
                Error::NotLearned {
                    user: "u".into(),
                    message_id: "m".into(),
                },
                Code::NotFound,
            ),
            (Error::Corrupt { what: "x".into() }, Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }

    #[test]
    fn unspecified_and_unknown_labels_are_invalid() {
        assert_eq!(
            label_from_wire(0).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            label_from_wire(99).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(label_from_wire(1).unwrap(), Label::Spam);
        assert_eq!(label_from_wire(2).unwrap(), Label::Ham);
    }
}
