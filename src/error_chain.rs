//! An error and its causes on one line, for logs and for reports that hold a failure as text.

use std::error::Error;

/// `error: cause: cause`. A cause whose text the line already holds is left out: many errors
/// repeat their source in their own message, and the line would say it twice.
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: String,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layers(messages: &[&str]) -> Layer {
        messages
            .iter()
            .rev()
            .fold(None, |source, message| {
                Some(Layer {
                    message: message.to_string(),
                    source: source.map(Box::new),
                })
            })
            .expect("at least one message")
    }

    #[test]
    fn causes_follow_the_error_in_order() {
        let error = layers(&["writing the blob", "uploading part 3", "connection reset"]);
        assert_eq!(
            error_chain(&error),
            "writing the blob: uploading part 3: connection reset"
        );
    }

    #[test]
    fn a_cause_the_line_already_holds_is_not_repeated() {
        let error = layers(&["service error: throttled", "throttled", "rate exceeded"]);
        assert_eq!(
            error_chain(&error),
            "service error: throttled: rate exceeded"
        );
    }
}
