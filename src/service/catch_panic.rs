//! The panic policy at the wire: a request whose handler panics (a bug) is
//! logged at ERROR with its method and answered INTERNAL "internal error
//! (logged)"; the connection and the server go on serving the others.
//!
//! Handlers run engine calls on the blocking pool; a panic there reaches
//! the handler as a `JoinError`, which [`super::ChaffService`] resumes as a
//! panic in the handler so that it ends here too, with the method known (see
//! `resume_if_panicked`). Panics elsewhere in a handler's future are
//! caught the same way. The engine's locks do not poison (see `engine`), so
//! the next request is served as if nothing happened; health is untouched.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinError;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;
use tracing::error;

/// What a caller whose request panicked is told; the details are in the log.
pub const PANIC_MESSAGE: &str = "internal error (logged)";

/// Wraps every gRPC service of the server in [`CatchPanic`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// A service that turns a panic of `inner` (while called or polled) into
/// an INTERNAL gRPC reply.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for CatchPanic<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
            Ok(future) => Box::pin(async move {
                match (CatchUnwind {
                    inner: Box::pin(future),
                })
                .await
                {
                    Ok(result) => result,
                    Err(payload) => Ok(internal(&method, payload.as_ref())),
                }
            }),
            Err(payload) => {
                let reply = internal(&method, payload.as_ref());
                Box::pin(async move { Ok(reply) })
            }
        }
    }
}

/// Polls `inner`, catching a panic of any poll.
struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Logs a caught panic and builds the caller's INTERNAL reply.
fn internal<R: Default>(method: &str, payload: &(dyn Any + Send)) -> http::Response<R> {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    error!(
        method,
        panic = message,
        "request handler panicked; answered INTERNAL"
    );
    super::status::internal_error().into_http()
}

/// A blocking-pool task's failure as the handler sees it: a panic is
/// resumed here, in the handler, so [`CatchPanic`] logs it with the method
/// and answers INTERNAL; a cancelled task (only at runtime shutdown)
/// becomes INTERNAL directly.
pub(super) fn resume_if_panicked(e: JoinError) -> Status {
    match e.try_into_panic() {
        Ok(payload) => std::panic::resume_unwind(payload),
        Err(e) => {
            error!(error = %e, "request task did not finish; answered INTERNAL");
            super::status::internal_error()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A service whose every call panics once polled.
    #[derive(Clone)]
    struct Panics;

    impl Service<http::Request<()>> for Panics {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            Box::pin(async { panic!("injected in a test") })
        }
    }

    /// Log lines, as the test's subscriber writes them.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_panic_is_logged_at_error_with_the_method_and_answered_internal() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let mut svc = CatchPanicLayer.layer(Panics);
        let req = http::Request::builder()
            .uri("/chaff.v1.Chaff/Score")
            .body(())
            .unwrap();
        let reply = svc.call(req).await.unwrap();
        let status = Status::from_header_map(reply.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), PANIC_MESSAGE);
        let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("ERROR"), "{log}");
        assert!(log.contains("/chaff.v1.Chaff/Score"), "{log}");
        assert!(log.contains("injected in a test"), "{log}");
    }
}
