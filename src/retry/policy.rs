//! Every decision about a delivery that did not simply succeed: whether a
//! retry may still go to the webhook it finds, whether the webhook takes
//! deliveries at all, and where a failed attempt goes next.
//!
//! The functions take the time (and the random source of the jitter) as
//! arguments, so the rules are tested without waiting.

use std::time::{Duration, SystemTime};

use rand::Rng;
use time::OffsetDateTime;

use crate::delivery::target::Target;
use crate::delivery::Failure;
use crate::event::EventMeta;
use crate::retry::codec::Binding;
use crate::retry::reason::Reason;
use crate::retry::schedule::{parse_retry_after, Schedule};
use crate::routing::pattern_matches;
use crate::webhook::WebhookStatus;

/// A delivery that is kept (dead-lettered) without an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub reason: Reason,
    pub detail: String,
    /// The `herald_deliveries_not_attempted_total` label.
    pub status: &'static str,
}

/// The retry-pending cut (of `cuts`, a webhook's `retried_pending`) that
/// re-drove a retry, if one did: the retry waits in a tier (`tier` is set;
/// a redrive record never is finished), its last attempt started before the
/// cut and it is due after it. Such a retry was written to the redrive topic
/// by the run that made the cut, so when it comes due it is finished, not
/// delivered again. A run selects exactly what its cut finishes and no
/// earlier cut did, so each waiting retry is delivered once, now or on time.
pub fn retried_pending(
    cuts: &[OffsetDateTime],
    tier: Option<usize>,
    last_attempt_at: Option<OffsetDateTime>,
    due_at: SystemTime,
) -> Option<OffsetDateTime> {
    let (Some(_), Some(last)) = (tier, last_attempt_at) else {
        return None;
    };
    let due = OffsetDateTime::from(due_at);
    cuts.iter().copied().find(|&cut| last < cut && cut < due)
}

/// Where a failed attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// To retry tier `tier`, due at `due_at`.
    Retry { tier: usize, due_at: SystemTime },
    /// Not attempted: no request slot came free within
    /// `delivery.max_queue_wait`. The delivery waits in tier `tier` (the one
    /// it came from, or the first) and comes back with its attempt count
    /// unchanged, so Herald's own backlog never uses up a receiver's retries.
    Defer { tier: usize, due_at: SystemTime },
    /// To the dead-letter topic; `disable` when the endpoint is gone.
    DeadLetter { reason: Reason, disable: bool },
}

/// The retry policy: the schedule and which statuses are final.
#[derive(Debug, Clone)]
pub struct Policy {
    pub schedule: Schedule,
    /// Statuses that end a delivery (besides 410), unless a webhook has its own.
    pub final_statuses: Vec<u16>,
}

impl Policy {
    /// Whether the webhook found by a retry's id is still the one the
    /// delivery was routed to: the same incarnation (`created_at`), the same
    /// tenant, and still subscribed to the event. A webhook deleted and
    /// created again with the same id, perhaps by another tenant, never gets
    /// the old one's deliveries.
    pub fn same_webhook<T: std::ops::Deref<Target = Target>>(
        found: Option<T>,
        bound: &Binding<'_>,
        meta: &EventMeta,
    ) -> Result<T, Kept> {
        let deleted = |detail: String| Kept {
            reason: Reason::WebhookDeleted,
            detail,
            status: "deleted",
        };
        let Some(target) = found else {
            return Err(deleted("the webhook was deleted before its retry was due".into()));
        };
        let webhook = &target.webhook;
        if bound.created_at.is_some_and(|created| created != webhook.created_at) {
            return Err(deleted(
                "the webhook was deleted before its retry was due (its id now names a webhook created later)".into(),
            ));
        }
        // Records written before the webhook's tenant was recorded are bound
        // to the event's tenant; a webhook bound to another never gets them.
        let tenant_changed = match (bound.created_at, bound.tenant) {
            (Some(_), tenant) => tenant != webhook.tenant.as_deref(),
            (None, _) => webhook
                .tenant
                .as_deref()
                .is_some_and(|t| meta.tenant.as_deref() != Some(t)),
        };
        if tenant_changed {
            return Err(deleted(
                "the webhook was deleted before its retry was due (its id now names another tenant's webhook)".into(),
            ));
        }
        if !webhook.events.iter().any(|p| pattern_matches(p, &meta.event_type)) {
            return Err(Kept {
                reason: Reason::WebhookUnsubscribed,
                detail: format!(
                    "the webhook no longer subscribes to `{}`; delivery kept for replay",
                    meta.event_type
                ),
                status: "unsubscribed",
            });
        }
        Ok(target)
    }

    /// Whether the webhook takes deliveries now; a paused or disabled one's
    /// deliveries are kept for replay.
    pub fn accepts(target: &Target) -> Result<(), Kept> {
        let status = target.webhook.status;
        let reason = match status {
            WebhookStatus::Active => return Ok(()),
            WebhookStatus::Paused => Reason::WebhookPaused,
            WebhookStatus::Disabled => Reason::WebhookDisabled,
        };
        Err(Kept {
            reason,
            detail: format!("webhook is {}; delivery kept for replay", status.as_str()),
            status: status.as_str(),
        })
    }

    /// Where an attempt that failed with `failure` goes, the attempt having
    /// come from tier `from` (`None`: a first attempt or a redrive).
    /// `webhook_final` is the webhook's own list of final statuses, if any.
    pub fn after_failure(
        &self,
        failure: &Failure,
        webhook_final: Option<&[u16]>,
        from: Option<usize>,
        now: SystemTime,
        rng: &mut impl Rng,
    ) -> AfterFailure {
        let status = failure.status();
        // 410 Gone: the endpoint said it will never accept this again.
        if status == Some(410) {
            return AfterFailure::DeadLetter {
                reason: Reason::EndpointGone,
                disable: true,
            };
        }
        if failure.is_wait() && !self.schedule.tiers.is_empty() {
            let tier = from.unwrap_or(0);
            let delay = self.schedule.delay(tier, None, rng);
            return AfterFailure::Defer {
                tier,
                due_at: now + delay,
            };
        }
        let finals = webhook_final.unwrap_or(&self.final_statuses);
        if status.is_some_and(|s| finals.contains(&s)) {
            return AfterFailure::DeadLetter {
                reason: Reason::FinalStatus,
                disable: false,
            };
        }
        match self.schedule.next_tier(from) {
            Some(tier) => {
                let delay = self.schedule.delay(tier, retry_after(failure, now), rng);
                AfterFailure::Retry {
                    tier,
                    due_at: now + delay,
                }
            }
            None if self.schedule.tiers.is_empty() => AfterFailure::DeadLetter {
                reason: Reason::DeliveryFailed,
                disable: false,
            },
            None => AfterFailure::DeadLetter {
                reason: Reason::RetriesExhausted,
                disable: false,
            },
        }
    }
}

/// The endpoint's `Retry-After`, honoured on 429 and 503.
fn retry_after(failure: &Failure, now: SystemTime) -> Option<Duration> {
    match failure {
        Failure::Status {
            status: 429 | 503,
            retry_after: Some(value),
        } => parse_retry_after(value, now),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::retry::Tier;
    use crate::delivery::target::EndpointDefaults;
    use crate::webhook::Webhook;
    use rand::SeedableRng;

    fn policy(tiers: &[u64], final_statuses: &[u16]) -> Policy {
        Policy {
            schedule: Schedule {
                tiers: tiers
                    .iter()
                    .enumerate()
                    .map(|(i, secs)| Tier {
                        topic: format!("r{i}"),
                        delay: Duration::from_secs(*secs),
                        max_delay: None,
                        retention: None,
                    })
                    .collect(),
                jitter: 0.0,
            },
            final_statuses: final_statuses.to_vec(),
        }
    }

    fn status(status: u16, retry_after: Option<&str>) -> Failure {
        Failure::Status {
            status,
            retry_after: retry_after.map(str::to_owned),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(3)
    }

    #[test]
    fn failures_climb_the_tiers_then_are_exhausted() {
        let p = policy(&[3600, 10_800], &[]);
        let now = at(0);
        let fail = status(500, None);
        assert_eq!(
            p.after_failure(&fail, None, None, now, &mut rng()),
            AfterFailure::Retry {
                tier: 0,
                due_at: now + Duration::from_secs(3600)
            }
        );
        assert_eq!(
            p.after_failure(&fail, None, Some(0), now, &mut rng()),
            AfterFailure::Retry {
                tier: 1,
                due_at: now + Duration::from_secs(10_800)
            }
        );
        assert_eq!(
            p.after_failure(&fail, None, Some(1), now, &mut rng()),
            AfterFailure::DeadLetter {
                reason: Reason::RetriesExhausted,
                disable: false
            }
        );
        let none = policy(&[], &[]);
        assert_eq!(
            none.after_failure(&Failure::Timeout, None, None, now, &mut rng()),
            AfterFailure::DeadLetter {
                reason: Reason::DeliveryFailed,
                disable: false
            }
        );
    }

    #[test]
    fn every_kind_of_failure_is_retried_by_default() {
        let p = policy(&[60], &[]);
        for failure in [
            status(400, None),
            status(404, None),
            status(301, None),
            status(503, None),
            Failure::Timeout,
            Failure::Network("connection refused".into()),
        ] {
            assert!(
                matches!(
                    p.after_failure(&failure, None, None, at(0), &mut rng()),
                    AfterFailure::Retry { tier: 0, .. }
                ),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn a_delivery_that_found_no_request_slot_waits_in_its_own_tier_without_using_one_up() {
        let p = policy(&[60, 600], &[]);
        let saturated = Failure::Saturated(crate::delivery::Limit::Endpoint);
        // A first attempt (or a redrive) waits in the first tier.
        assert!(matches!(
            p.after_failure(&saturated, None, None, at(0), &mut rng()),
            AfterFailure::Defer { tier: 0, .. }
        ));
        // A retry waits in the tier it came from, the last one too: never exhausted by waiting.
        for from in [0, 1] {
            let AfterFailure::Defer { tier, due_at } = p.after_failure(&saturated, None, Some(from), at(0), &mut rng())
            else {
                panic!("saturated from tier {from} is deferred");
            };
            assert_eq!(tier, from);
            assert!(due_at > at(0), "it waits the tier's delay");
        }
        // With no tiers there is nowhere to wait.
        assert_eq!(
            policy(&[], &[]).after_failure(&saturated, None, None, at(0), &mut rng()),
            AfterFailure::DeadLetter {
                reason: Reason::DeliveryFailed,
                disable: false
            }
        );
    }

    #[test]
    fn gone_is_final_and_disables_and_final_statuses_end_a_delivery() {
        let p = policy(&[60], &[]);
        assert_eq!(
            p.after_failure(&status(410, None), None, None, at(0), &mut rng()),
            AfterFailure::DeadLetter {
                reason: Reason::EndpointGone,
                disable: true
            }
        );
        let p = policy(&[60], &[400, 422]);
        assert_eq!(
            p.after_failure(&status(422, None), None, None, at(0), &mut rng()),
            AfterFailure::DeadLetter {
                reason: Reason::FinalStatus,
                disable: false
            }
        );
        assert!(matches!(
            p.after_failure(&status(500, None), None, None, at(0), &mut rng()),
            AfterFailure::Retry { .. }
        ));
        // A webhook's own list replaces the global one.
        assert!(matches!(
            p.after_failure(&status(422, None), Some(&[]), None, at(0), &mut rng()),
            AfterFailure::Retry { .. }
        ));
        assert_eq!(
            p.after_failure(&status(500, None), Some(&[500]), None, at(0), &mut rng()),
            AfterFailure::DeadLetter {
                reason: Reason::FinalStatus,
                disable: false
            }
        );
        assert_eq!(
            p.after_failure(&status(410, None), Some(&[]), None, at(0), &mut rng()),
            AfterFailure::DeadLetter {
                reason: Reason::EndpointGone,
                disable: true
            },
            "410 is always final"
        );
    }

    #[test]
    fn retry_after_is_read_at_the_given_time_and_only_on_429_and_503() {
        let p = policy(&[60], &[]);
        let now = at(0);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(
            p.after_failure(&status(429, Some(&date)), None, None, now, &mut rng()),
            AfterFailure::Retry {
                tier: 0,
                due_at: now + Duration::from_secs(120)
            }
        );
        assert_eq!(
            p.after_failure(&status(503, Some("150")), None, None, now, &mut rng()),
            AfterFailure::Retry {
                tier: 0,
                due_at: now + Duration::from_secs(150)
            }
        );
        assert_eq!(
            p.after_failure(&status(500, Some("150")), None, None, now, &mut rng()),
            AfterFailure::Retry {
                tier: 0,
                due_at: now + Duration::from_secs(60)
            }
        );
    }

    fn target(webhook: Webhook) -> Target {
        let defaults = EndpointDefaults {
            max_in_flight: 4,
            max_queue_wait: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            default_rate: None,
        };
        Target::compile(webhook, &defaults, None).unwrap()
    }

    fn meta(event_type: &str, tenant: Option<&str>) -> EventMeta {
        EventMeta {
            event_type: event_type.into(),
            event_id: None,
            event_time: None,
            tenant: tenant.map(str::to_owned),
            content_type: "application/json".into(),
            forward_headers: Vec::new(),
            id_source: None,
        }
    }

    #[test]
    fn a_retry_reaches_only_the_incarnation_it_was_routed_to() {
        let mut acme = Webhook::new("orders", "Orders", "https://example.com/", &["order.*"]);
        acme.tenant = Some("acme".into());
        let bound = Binding::of(&acme);
        let event = meta("order.paid", Some("acme"));
        assert!(Policy::same_webhook(Some(&target(acme.clone())), &bound, &event).is_ok());
        assert_eq!(
            Policy::same_webhook(None::<&Target>, &bound, &event)
                .unwrap_err()
                .reason,
            Reason::WebhookDeleted
        );
        // Deleted, and the id re-used by another tenant.
        let mut globex = Webhook::new("orders", "Other", "https://example.org/", &["*"]);
        globex.tenant = Some("globex".into());
        globex.created_at = acme.created_at + Duration::from_secs(60);
        let kept = Policy::same_webhook(Some(&target(globex.clone())), &bound, &event).unwrap_err();
        assert_eq!(kept.reason, Reason::WebhookDeleted);
        assert!(kept.detail.contains("created later"), "{}", kept.detail);
        // Even with the same created_at, another tenant is another webhook.
        globex.created_at = acme.created_at;
        assert_eq!(
            Policy::same_webhook(Some(&target(globex.clone())), &bound, &event)
                .unwrap_err()
                .reason,
            Reason::WebhookDeleted
        );
        // A record written before bindings were recorded: the event's tenant decides.
        let unbound = Binding {
            webhook_id: "orders",
            tenant: None,
            created_at: None,
        };
        assert!(Policy::same_webhook(Some(&target(globex)), &unbound, &event).is_err());
        assert!(Policy::same_webhook(Some(&target(acme.clone())), &unbound, &event).is_ok());
        // Still the same webhook, but no longer subscribed.
        let mut narrowed = acme.clone();
        narrowed.events = vec!["invoice.*".into()];
        let kept = Policy::same_webhook(Some(&target(narrowed)), &bound, &event).unwrap_err();
        assert_eq!(kept.reason, Reason::WebhookUnsubscribed);
    }

    #[test]
    fn paused_and_disabled_webhooks_keep_their_deliveries() {
        let mut webhook = Webhook::new("w", "W", "https://example.com/", &["*"]);
        assert!(Policy::accepts(&target(webhook.clone())).is_ok());
        webhook.status = WebhookStatus::Paused;
        assert_eq!(
            Policy::accepts(&target(webhook.clone())).unwrap_err().reason,
            Reason::WebhookPaused
        );
        webhook.status = WebhookStatus::Disabled;
        assert_eq!(
            Policy::accepts(&target(webhook)).unwrap_err().reason,
            Reason::WebhookDisabled
        );
    }
}
