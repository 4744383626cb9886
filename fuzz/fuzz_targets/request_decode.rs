//! Arbitrary bytes as request messages of the busiest and the most nested RPCs: decoding never
//! panics, and a failure becomes INVALID_ARGUMENT naming where it failed (the codec's answer).
#![no_main]

use fluxgate_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn decode<M: Message + Default>(data: &[u8]) {
    if let Err(e) = M::decode(data) {
        let status = fluxgate_proto::codec::undecodable(&e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}

fuzz_target!(|data: &[u8]| {
    decode::<pb::CheckPermissionRequest>(data);
    decode::<pb::BatchCheckPermissionsRequest>(data);
    decode::<pb::SubmitChangeRequestRequest>(data);
    decode::<pb::UpdateSettingsRequest>(data);
    decode::<pb::IngestAuditEventsRequest>(data);
    decode::<pb::LoginRequest>(data);
});
