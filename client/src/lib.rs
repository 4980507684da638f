//! A small HTTP/1 client for talking to a Tribune node: the one the
//! integration tests and `tribune-load` share. The response head parser
//! is sans-IO (`head`); `blocking` is for tests, `stream` (tokio) for the
//! load generator's listeners, which keep the socket after the head.

pub mod blocking;
pub mod head;
pub mod stream;

pub use blocking::{raw_request, request, Response};
pub use head::{parse_head, Head, NotHttp};
