//! FluxGate as an OpenID Connect relying party, with the `openidconnect` crate: discovery (cached
//! for an hour; fetched again, at most every 10 seconds, when a token names a key the cached JWKS
//! lacks: key rotation), the authorization code flow with PKCE (S256), `state` and `nonce`, and
//! the ID token's checks (signature by a key of the provider's JWKS under an allow-listed
//! algorithm, never `none` or HMAC; issuer; audience; expiry; nonce). The answer is a
//! [`Vouched`] identity for the use cases in [`fluxgate_core::sso`]; every refusal is one line
//! saying what did not hold.
//!
//! Redirects are never followed (a provider's endpoint that redirects is refused), and each
//! provider has its own callback address, so that an answer cannot be replayed at another
//! provider's (the mix-up attack).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use fluxgate_core::sso::{GroupTarget, Rules, Vouched};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointNotSet, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse,
    TokenResponse as _,
};
use serde::{Deserialize, Serialize};

use crate::config::{OidcConfig, OidcProvider};

/// The claims of an ID token beyond the standard ones (`groups`, `roles`, …).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extra(serde_json::Map<String, serde_json::Value>);
impl AdditionalClaims for Extra {}

type TokenFields = IdTokenFields<
    Extra,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<TokenFields, CoreTokenType>;
type Rp<A, D, I, R, T, U> = Client<
    Extra,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    A,
    D,
    I,
    R,
    T,
    U,
>;
/// A client made from discovered metadata: the authorization endpoint set, the token and
/// userinfo endpoints as the provider published them.
type Ready = Rp<
    openidconnect::EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// How long discovery is trusted.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// How often a token naming an unknown key may make us fetch the keys again.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// One configured provider, with its discovered metadata.
#[derive(Debug)]
pub struct Provider {
    pub cfg: OidcProvider,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    cached: Mutex<Option<(CoreProviderMetadata, Instant)>>,
}

/// Every configured provider, and the HTTP client that talks to them.
#[derive(Debug)]
pub struct Providers {
    list: Vec<Provider>,
    http: reqwest::Client,
}

fn alg(name: &str) -> Option<CoreJwsSigningAlgorithm> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

impl Providers {
    /// The providers of `cfg`, whose callbacks are under `public_url`.
    pub fn new(cfg: &OidcConfig, public_url: &str) -> anyhow::Result<Providers> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        let base = public_url.trim_end_matches('/');
        let list = cfg
            .providers
            .iter()
            .map(|p| {
                Ok(Provider {
                    issuer: IssuerUrl::new(p.issuer.clone())?,
                    redirect: RedirectUrl::new(format!("{base}/sso/{}/callback", p.id))?,
                    algorithms: p.algorithms.iter().filter_map(|a| alg(a)).collect(),
                    cfg: p.clone(),
                    cached: Mutex::new(None),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Providers { list, http })
    }

    pub fn list(&self) -> &[Provider] {
        &self.list
    }

    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.list.iter().find(|p| p.cfg.id == id)
    }

    /// Where to send the browser: the provider's authorization endpoint with our `state`, the
    /// `nonce` and the S256 challenge of `pkce_verifier`.
    pub async fn authorize_url(
        &self,
        p: &Provider,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<String, String> {
        let meta = self.metadata(p, false).await?;
        let client = p.client(meta);
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.into(),
        ));
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for s in &p.cfg.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        Ok(req.url().0.to_string())
    }

    /// Exchanges the provider's code and checks the ID token it answers; the identity it
    /// vouches for.
    pub async fn exchange(
        &self,
        p: &Provider,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Vouched, String> {
        let meta = self.metadata(p, false).await?;
        let client = p.client(meta);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| format!("the provider has no token endpoint: {e}"))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| format!("the provider refused the authorization code: {e}"))?;
        let id_token = tokens
            .id_token()
            .ok_or("the provider answered no ID token")?;
        let nonce = Nonce::new(nonce.to_owned());
        let verified = {
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(p.algorithms.clone());
            id_token.claims(&verifier, &nonce).cloned()
        };
        let claims = match verified {
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys since we fetched them.
                let meta = self.metadata(p, true).await?;
                let client = p.client(meta);
                let verifier = client
                    .id_token_verifier()
                    .set_allowed_algs(p.algorithms.clone());
                id_token.claims(&verifier, &nonce).cloned().map_err(why)?
            }
            other => other.map_err(why)?,
        };
        Ok(vouched(&p.cfg, &claims))
    }

    /// The provider's metadata: cached, or discovered (again, when `fresh` and the cache is
    /// older than [`REFETCH_EVERY`]).
    async fn metadata(&self, p: &Provider, fresh: bool) -> Result<CoreProviderMetadata, String> {
        if let Some((m, at)) = p.cached.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let age = at.elapsed();
            if age < METADATA_TTL && !(fresh && age >= REFETCH_EVERY) {
                return Ok(m.clone());
            }
        }
        let m = CoreProviderMetadata::discover_async(p.issuer.clone(), &self.http)
            .await
            .map_err(|e| format!("discovery at {} failed: {e}", p.issuer.as_str()))?;
        *p.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((m.clone(), Instant::now()));
        Ok(m)
    }
}

impl Provider {
    fn client(&self, meta: CoreProviderMetadata) -> Ready {
        Ready::from_provider_metadata(
            meta,
            ClientId::new(self.cfg.client_id.clone()),
            self.cfg.secret().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// What the use cases allow this provider to do.
    pub fn rules(&self) -> Rules {
        let c = &self.cfg;
        Rules {
            provider: c.id.clone(),
            link_by_email: c.link_by_email,
            create_users: c.create_users,
            default_role: c.default_role,
            role_claim: c.role_claim.clone(),
            role_map: c.role_map.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            groups_claim: c.groups_claim.clone(),
            group_map: c
                .group_map
                .iter()
                .map(|g| {
                    (
                        g.claim.clone(),
                        GroupTarget {
                            portfolio: g.portfolio.clone(),
                            group: g.group.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The issuer URL as configured.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }
}

/// One line for a failed check of an ID token.
fn why(e: openidconnect::ClaimsVerificationError) -> String {
    use openidconnect::ClaimsVerificationError as C;
    use openidconnect::SignatureVerificationError as S;
    match e {
        C::Expired(_) => "the ID token has expired".into(),
        C::InvalidAudience(_) => "the ID token is for another client (audience)".into(),
        C::InvalidIssuer(_) => "the ID token was issued by another issuer".into(),
        C::InvalidNonce(_) => "the ID token's nonce is missing or does not match".into(),
        C::InvalidSubject(_) => "the ID token has no valid subject".into(),
        C::SignatureVerification(S::NoMatchingKey) => {
            "the ID token is signed by a key the provider does not publish".into()
        }
        C::SignatureVerification(S::DisallowedAlg(a) | S::UnsupportedAlg(a))
            if a.to_lowercase().contains("none") =>
        {
            "the ID token is not signed (alg none is never accepted)".into()
        }
        C::SignatureVerification(S::DisallowedAlg(a) | S::UnsupportedAlg(a)) => {
            format!("the ID token's signature algorithm is not allowed ({a})")
        }
        C::SignatureVerification(S::NoSignature) => {
            "the ID token is not signed (alg none is never accepted)".into()
        }
        C::SignatureVerification(S::CryptoError(_)) => {
            "the ID token's signature does not verify".into()
        }
        C::SignatureVerification(e) => format!("the ID token's signature is refused: {e}"),
        e => format!("the ID token is refused: {e}"),
    }
}

/// The values of a claim that is a string or an array of strings.
fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn vouched(
    cfg: &OidcProvider,
    c: &openidconnect::IdTokenClaims<Extra, CoreGenderClaim>,
) -> Vouched {
    let extra = &c.additional_claims().0;
    let claim = |name: &Option<String>| strings(name.as_ref().and_then(|n| extra.get(n)));
    Vouched {
        issuer: c.issuer().as_str().to_owned(),
        subject: c.subject().as_str().to_owned(),
        email: c.email().map(|e| e.as_str().to_owned()),
        email_verified: c.email_verified().unwrap_or(false),
        name: c
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned()),
        preferred_username: c.preferred_username().map(|u| u.as_str().to_owned()),
        roles: claim(&cfg.role_claim),
        groups: claim(&cfg.groups_claim),
    }
}
