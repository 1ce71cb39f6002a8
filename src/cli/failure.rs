//! How a command of the command line fails: a short message for a person
//! and an exit code for a script.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done (`verify`: the token is valid) |
//! | 1 | `verify`: the token is not valid |
//! | 2 | the command line itself is wrong (clap's usage errors), or `TOKIO_WORKER_THREADS` ([`super::runtime`]) |
//! | 3 | could not find out: no cluster configured or reachable, refused, the CRDs not installed, the JWKS not fetched |
//! | 4 | the object named does not exist, or holds no token |

use std::process::ExitCode;

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    kind: Kind,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invalid,
    Unavailable,
    NotFound,
}

impl Failure {
    /// The token was checked and is not valid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, message)
    }

    /// The answer could not be had.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }

    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self.kind {
            Kind::Invalid => 1,
            Kind::Unavailable => 3,
            Kind::NotFound => 4,
        })
    }

    /// A failed request about `what` (e.g. `AccessToken team-a/ci`), told
    /// apart: the object missing, the kind missing (no CRDs), refused, or
    /// the cluster out of reach; one line each.
    pub fn from_kube(what: &str, error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if status.code == 404 => {
                // A missing object names itself (`kind "name" not found`);
                // a missing resource type answers a generic message (or a
                // plain "404 page not found" for a group that is not there).
                if !status.message.contains('"') {
                    Self::unavailable(
                        "the tokensmith CRDs are not installed in this cluster (helm install the chart, or kubectl apply -f crds/)",
                    )
                } else {
                    Self::not_found(format!("{what} not found"))
                }
            }
            kube::Error::Api(status) if status.code == 403 => {
                Self::unavailable(format!("not allowed to read {what}: {}", status.message))
            }
            kube::Error::Api(status) => Self::unavailable(format!(
                "the API server refused the request for {what}: {} ({})",
                status.message, status.code
            )),
            _ => Self::unavailable(format!(
                "could not reach the cluster: {}",
                first_line(&error)
            )),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::unavailable(first_line(&error))
    }
}

/// The outermost message of `error` alone: kube's errors repeat their
/// causes in their own text, so printing the chain says everything twice.
pub fn first_line(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or_default();
    const LONGEST: usize = 240;
    if line.chars().count() > LONGEST {
        let cut: String = line.chars().take(LONGEST).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                message: message.into(),
                ..kube::core::Status::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn kube_errors_become_one_line_and_a_code() {
        let rows = [
            (
                api_error(404, "accesstokens.tokensmith.dev \"ci\" not found"),
                Kind::NotFound,
                "AccessToken team/ci not found",
            ),
            (
                api_error(404, "the server could not find the requested resource"),
                Kind::Unavailable,
                "CRDs are not installed",
            ),
            (
                api_error(404, "404 page not found"),
                Kind::Unavailable,
                "CRDs are not installed",
            ),
            (
                api_error(403, "User \"bob\" cannot get resource"),
                Kind::Unavailable,
                "not allowed to read AccessToken team/ci",
            ),
            (
                api_error(500, "etcdserver: request timed out"),
                Kind::Unavailable,
                "etcdserver: request timed out (500)",
            ),
        ];
        for (error, kind, says) in rows {
            let failure = Failure::from_kube("AccessToken team/ci", error);
            assert_eq!(failure.kind(), kind, "{failure}");
            assert!(failure.to_string().contains(says), "{failure}");
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(1000);
        assert!(first_line(&long).chars().count() <= 241);
        assert_eq!(first_line(&"one\ntwo"), "one");
    }
}
