//! The AAT step of a client message (spec 4.3 step 0b): the credentials it carries are checked,
//! first uses and refusals are audited, and refused messages are answered.

use std::io;
use std::sync::Arc;

use aip_aat::proof::Call;
use aip_aat::token::VerifiedAat;

use crate::audit::Record;
use crate::engine::Engine;
use crate::identity::{self, Check, Presented, Rejection, Verified};
use crate::jsonrpc;
use crate::metrics;

use super::context::Message;
use super::lines::send;
use super::shared::{Relay, elapsed_us};

impl Relay {
    /// Spec 4.3 step 0b for `call`: `Ok` with the verified AAT (`None`: anonymous, or an
    /// optional AAT that failed), `Err` with the result of answering a refusal to the client.
    pub(super) fn authenticate(
        &self,
        msg: &Message<'_>,
        presented: Presented<'_>,
        call: &Call<'_>,
    ) -> Result<Option<Arc<VerifiedAat>>, io::Result<()>> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let tool = (call.method == "tools/call").then_some(call.tool);
        match identity.check(presented, call) {
            Check::Anonymous => Ok(None),
            Check::Verified(v) => Ok(Some(self.validated(msg.engine, v, tool))),
            Check::Rejected(r) => {
                self.rejected(msg, tool, call.method, &r, presented.aat);
                if r.enforced {
                    return Err(self.refuse_identity(msg, tool, &r));
                }
                Ok(None)
            }
        }
    }

    /// Records the first use of a verified AAT (`AAT_VALIDATED`) and hands the token on.
    fn validated(&self, engine: &Engine, verified: Verified, tool: Option<&str>) -> Arc<VerifiedAat> {
        if verified.first_use {
            let mut record = Record::new("upstream", "ALLOW", engine.policy().mode().as_str(), false);
            record.event = Some("AAT_VALIDATED".into());
            record.tool = tool.map(str::to_owned);
            record.policy_hash = Some(engine.policy().hash().to_owned());
            identity::audit_fields(&verified.aat, &mut record);
            record.capabilities_granted = Some(verified.aat.claims().capabilities.tools.clone());
            self.audit.record(record);
        }
        if let Some(mode) = verified.failover {
            tracing::warn!(mode, "revocation not checked: registry data unavailable");
        }
        verified.aat
    }

    /// Records an `AAT_REJECTED` event (refused, or only logged when the AAT was optional).
    fn rejected(
        &self,
        msg: &Message<'_>,
        tool: Option<&str>,
        method: &str,
        rejection: &Rejection,
        token: Option<&str>,
    ) {
        let (engine, started) = (msg.engine, msg.started);
        let decision = if rejection.enforced { "BLOCK" } else { "ALLOW" };
        metrics::record_decision(decision, Some("aat_invalid"), started.elapsed());
        let mut record = Record::new("upstream", decision, engine.policy().mode().as_str(), true);
        record.event = Some("AAT_REJECTED".into());
        record.method = Some(method.to_owned());
        record.tool = tool.map(str::to_owned);
        record.request_id = msg.envelope.id.and_then(|id| serde_json::from_str(id.get()).ok());
        record.policy_hash = Some(engine.policy().hash().to_owned());
        record.aat_error = rejection.refusal.aat_error().map(str::to_owned);
        record.reason = Some(if rejection.enforced {
            rejection.refusal.reason()
        } else {
            format!("AAT not required; evaluated without it: {}", rejection.refusal.reason())
        });
        if rejection.enforced {
            record.error_code = Some(rejection.refusal.error_code().code());
        }
        match (&rejection.aat, token) {
            (Some(aat), _) => identity::audit_fields(aat, &mut record),
            (None, Some(token)) => identity::unverified_audit_fields(token, &mut record),
            (None, None) => {}
        }
        record.duration_us = Some(elapsed_us(started));
        if rejection.enforced {
            tracing::info!(tool, "refused: {}", rejection.refusal.reason());
        } else {
            tracing::warn!(
                tool,
                "invalid AAT presented but not required: {}",
                rejection.refusal.reason()
            );
        }
        self.audit.record(record);
    }

    /// Answers a refused AAT to the client (a notification gets no answer).
    fn refuse_identity(&self, msg: &Message<'_>, tool: Option<&str>, rejection: &Rejection) -> io::Result<()> {
        if msg.envelope.id.is_none() {
            return Ok(());
        }
        let error = rejection.refusal.error(tool);
        let text = jsonrpc::error_response(msg.envelope.id, error.code, Some(error.data));
        send(msg.client, text.as_bytes(), msg.idle)
    }
}
