//! The protobuf codec of `chaff.v1`: prost's, except that a request that
//! does not decode (bad wire format, invalid UTF-8 in a string field) is
//! the caller's mistake, INVALID_ARGUMENT, where prost's codec answers
//! INTERNAL. build.rs points the generated code here (`codec_path`).

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with decode failures mapped to INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ChaffCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ChaffCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for ChaffCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ChaffDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ChaffDecoder(self.0.decoder())
    }
}

/// Decodes with prost; a failure names the field and asks for UTF-8.
#[derive(Debug, Clone)]
pub struct ChaffDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for ChaffDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            Status::invalid_argument(format!(
                "the request is not a valid protobuf message ({}); string fields must be UTF-8, \
                 binary content belongs in bytes fields",
                s.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
