//! The protobuf codec of the generated services: prost's, except that a message that does not
//! decode (bad wire bytes, a string that is not UTF-8, nesting past prost's limit) is the
//! sender's bad input, answered INVALID_ARGUMENT with a field violation naming where decoding
//! failed, rather than prost's INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Longest field path reported.
const MAX_FIELD_CHARS: usize = 200;

#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { _pd: PhantomData }
    }
}

#[derive(Debug, Clone)]
pub struct StrictDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| undecodable(&e))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// INVALID_ARGUMENT for a message that does not decode.
pub fn undecodable(e: &prost::DecodeError) -> Status {
    let (field, why) = split_decode_error(&e.to_string());
    let field = if field.is_empty() {
        "request".to_owned()
    } else {
        field
    };
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("the request message does not decode: {field}: {why}"),
        ErrorDetails::with_bad_request(vec![FieldViolation::new(field, why)]),
    )
}

/// Splits prost's "failed to decode Protobuf message: Inner.field: Outer.field: description"
/// into the field path, outermost first ("field.field"), and the description.
fn split_decode_error(text: &str) -> (String, String) {
    let rest = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(text);
    let mut fields = Vec::new();
    let mut remaining = rest;
    while let Some((head, tail)) = remaining.split_once(": ") {
        let Some((message, field)) = head.rsplit_once('.') else {
            break;
        };
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(message) || !ident(field) {
            break;
        }
        fields.push(field);
        remaining = tail;
    }
    fields.reverse();
    let mut path = fields.join(".");
    if path.len() > MAX_FIELD_CHARS {
        path.truncate(MAX_FIELD_CHARS);
        path.push('…');
    }
    (path, remaining.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_name_the_field_outermost_first() {
        let (f, why) = split_decode_error(
            "failed to decode Protobuf message: Value.kind: Struct.fields: ChangeRequest.payload: \
             SubmitChangeRequestRequest.change_request: recursion limit reached",
        );
        assert_eq!(f, "change_request.payload.fields.kind");
        assert_eq!(why, "recursion limit reached");
        let (f, why) =
            split_decode_error("failed to decode Protobuf message: invalid wire type value: 7");
        assert_eq!(f, "");
        assert_eq!(why, "invalid wire type value: 7");
    }
}
