//! Rate limits: logins per client IP and per account, and authenticated requests per user or API
//! key (the organization as a whole gets ten times as many). A refused request is a 429 with
//! `Retry-After`. Limits are per replica (in memory), which is what a login brute-force guard
//! needs; behind N replicas the effective limit is at most N times the setting.

use std::{hash::Hash, net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use uuid::Uuid;

use crate::{config::Config, error::ApiError};

type Limiter<K> = Option<DefaultKeyedRateLimiter<K>>;

pub struct RateLimits {
    login_per_ip: Limiter<IpAddr>,
    login_per_account: Limiter<String>,
    api_per_principal: Limiter<String>,
    api_per_organization: Limiter<Uuid>,
}

fn limiter<K: Hash + Eq + Clone>(quota: Option<Quota>) -> Limiter<K> {
    quota.map(DefaultKeyedRateLimiter::keyed)
}

fn per_minute(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_minute)
}

fn per_second(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_second)
}

fn check<K: Hash + Eq + Clone>(limiter: &Limiter<K>, key: &K) -> Result<(), ApiError> {
    let Some(limiter) = limiter else { return Ok(()) };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        ApiError::TooManyRequests { retry_after_seconds: wait.as_secs() + 1 }
    })
}

impl RateLimits {
    pub fn new(config: &Config) -> Self {
        Self {
            login_per_ip: limiter(per_minute(config.rate_limit_login_per_ip)),
            login_per_account: limiter(per_minute(config.rate_limit_login_per_account)),
            api_per_principal: limiter(per_second(config.rate_limit_api_per_second)),
            api_per_organization: limiter(per_second(config.rate_limit_api_per_second.saturating_mul(10))),
        }
    }

    pub fn check_login(&self, ip: Option<IpAddr>, account: &str) -> Result<(), ApiError> {
        if let Some(ip) = ip {
            check(&self.login_per_ip, &ip)?;
        }
        check(&self.login_per_account, &account.to_lowercase())
    }

    pub fn check_api(&self, principal: &str, organization_id: Uuid) -> Result<(), ApiError> {
        check(&self.api_per_principal, &principal.to_owned())?;
        check(&self.api_per_organization, &organization_id)
    }

    /// Forgets keys idle long enough to be back at full quota, so memory stays bounded.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let limits = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(limits) = limits.upgrade() else { break };
                if let Some(l) = &limits.login_per_ip {
                    l.retain_recent();
                }
                if let Some(l) = &limits.login_per_account {
                    l.retain_recent();
                }
                if let Some(l) = &limits.api_per_principal {
                    l.retain_recent();
                }
                if let Some(l) = &limits.api_per_organization {
                    l.retain_recent();
                }
            }
        });
    }
}
