//! The one JSON form of an audit event, shared by everything that writes events out: the
//! export, webhook and audit-stream deliveries, and the retention archive.

use fluxgate_proto::v1 as pb;
use fluxgate_store::audit::Event;

use crate::convert::timestamp;

/// An event as the API has it.
pub fn event_pb(e: &Event) -> pb::AuditEvent {
    pb::AuditEvent {
        sequence: e.seq,
        time: Some(timestamp(e.occurred_at)),
        actor: e.actor_id.clone().unwrap_or_default(),
        actor_display_name: e.actor_name.clone().unwrap_or_default(),
        actor_role: e.actor_role.clone().unwrap_or_default(),
        action: e.action.clone(),
        target_type: e.target_type.clone(),
        target: e.target_id.clone().unwrap_or_default(),
        before_json: e.before_json.clone().unwrap_or_default(),
        after_json: e.after_json.clone().unwrap_or_default(),
        outcome: e.outcome.clone(),
        detail: e.detail.clone().unwrap_or_default(),
        request_id: e.request_id.clone().unwrap_or_default(),
        peer: e.peer_addr.clone().unwrap_or_default(),
        hash: e.hash.clone(),
        previous_hash: e.prev_hash.clone(),
    }
}

/// The one JSON form of an event, for export lines as for ListAuditEvents through grpcurl or
/// `fluxctl -o json`: the canonical protobuf JSON mapping of `AuditEvent` (lowerCamelCase names,
/// 64-bit numbers as strings, RFC 3339 times, defaults omitted).
pub fn json_line(e: &Event, out: &mut Vec<u8>) {
    use prost::Message as _;
    static DESCRIPTOR: std::sync::OnceLock<Option<prost_reflect::MessageDescriptor>> =
        std::sync::OnceLock::new();
    let Some(desc) = DESCRIPTOR.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(fluxgate_proto::FILE_DESCRIPTOR_SET)
            .ok()?
            .get_message_by_name("fluxgate.v1.AuditEvent")
    }) else {
        tracing::error!("fluxgate.v1.AuditEvent is not in the descriptor set");
        return;
    };
    let Ok(dynamic) =
        prost_reflect::DynamicMessage::decode(desc.clone(), event_pb(e).encode_to_vec().as_slice())
    else {
        return;
    };
    if serde_json::to_writer(&mut *out, &dynamic).is_ok() {
        out.push(b'\n');
    }
}

/// The renderer the webhook fan-out uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditJson;

impl fluxgate_core::webhooks::Render for AuditJson {
    fn event_json(&self, e: &Event) -> String {
        let mut out = Vec::with_capacity(512);
        json_line(e, &mut out);
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
