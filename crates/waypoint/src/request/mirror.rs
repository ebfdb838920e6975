//! RequestMirror: a copy of the request — head and body — to each of the rule's mirror
//! backends, its answer dropped. The copy never slows the original: the body is teed
//! frame by frame (the bytes are shared, not copied) into a small queue per mirror, and a
//! mirror that falls behind by more than [`COPY_QUEUE`] frames has its copy aborted
//! (the mirror sees a reset request, never a truncated one passed off as complete).
//! The copy's host gets `-shadow` appended, as Envoy (Istio's waypoint) does.

use tokio::sync::mpsc;

use super::*;

/// Frames a mirror's copy may lag behind the original before it is aborted.
pub(crate) const COPY_QUEUE: usize = 64;

/// Sends a copy of `request` to the rule's mirrors (each by its percentage); a request
/// with a body gets its body teed to them.
pub(super) fn mirror(
    shared: &Arc<Shared>,
    tunnel: &Tunnel,
    snap: &Snapshot,
    action: &Action,
    request: &mut Request<upstream::RequestBody>,
    version: Version,
) {
    if action.mirrors.is_empty() {
        return;
    }
    let bodyless = request.body().is_end_stream();
    let mut copies = Vec::new();
    for (target, percent) in &action.mirrors {
        if random() % u64::from(routes::MILLION) >= u64::from(*percent) {
            continue;
        }
        let Ok(endpoint) =
            upstream::choose_backend(snap, &shared.load, target, tunnel.target.port(), None)
        else {
            continue;
        };
        let mut copy = route::replay(request);
        shadowed(&mut copy);
        if !bodyless {
            let (sender, receiver) = mpsc::channel(COPY_QUEUE);
            copies.push(sender);
            *copy.body_mut() = CopyBody {
                receiver,
                ended: false,
            }
            .boxed();
        }
        let (shared, client) = (shared.clone(), tunnel.client);
        tokio::spawn(async move {
            match shared
                .clients
                .send(&shared.connector, &endpoint, client, version, copy)
                .await
            {
                Ok(response) => {
                    // Read and drop the answer so the connection can be reused.
                    let _ = response.into_body().collect().await;
                }
                Err(error) => tracing::debug!(upstream = %endpoint.addr, %error, "mirror failed"),
            }
        });
    }
    if !copies.is_empty() {
        let body = std::mem::replace(
            request.body_mut(),
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
        *request.body_mut() = Tee {
            inner: body,
            copies,
        }
        .boxed();
    }
}

/// Marks a copy as one, as Envoy does: `-shadow` after the host in `Host` (HTTP/1.1) or
/// `:authority` (h2), so `reviews:9080` arrives as `reviews-shadow:9080`.
fn shadowed(copy: &mut Request<upstream::RequestBody>) {
    fn shadow(authority: &str) -> String {
        // The port is what follows the last ':' after an IPv6 literal's ']', if any.
        let host_end = authority.rfind(']').map_or(0, |i| i + 1);
        match authority[host_end..].rfind(':') {
            Some(colon) => {
                let (host, port) = authority.split_at(host_end + colon);
                format!("{host}-shadow{port}")
            }
            None => format!("{authority}-shadow"),
        }
    }
    if let Some(host) = copy
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        && let Ok(value) = HeaderValue::from_str(&shadow(host))
    {
        copy.headers_mut().insert(header::HOST, value);
    }
    if let Some(authority) = copy.uri().authority().map(|a| shadow(a.as_str())) {
        let mut parts = copy.uri().clone().into_parts();
        if let Ok(authority) = authority.parse() {
            parts.authority = Some(authority);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *copy.uri_mut() = uri;
            }
        }
    }
}

/// What the tee hands a mirror's copy.
enum Copied {
    Frame(Frame<Bytes>),
    /// The original body ended cleanly.
    End,
}

/// The original body, handing each frame to the mirrors' queues as it passes.
struct Tee {
    inner: upstream::RequestBody,
    copies: Vec<mpsc::Sender<Copied>>,
}

impl Tee {
    /// Offers `copied` to every mirror still keeping up; one whose queue is full (or
    /// whose request is gone) is dropped, which aborts its copy.
    fn offer(&mut self, copied: impl Fn() -> Copied) {
        self.copies
            .retain(|sender| sender.try_send(copied()).is_ok());
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.offer(|| Copied::Frame(Frame::data(data.clone())));
                } else if let Some(trailers) = frame.trailers_ref() {
                    let trailers = trailers.clone();
                    self.offer(|| Copied::Frame(Frame::trailers(trailers.clone())));
                }
                // A body of known length is not polled past its last byte.
                if self.inner.is_end_stream() {
                    self.offer(|| Copied::End);
                    self.copies.clear();
                }
            }
            Poll::Ready(None) => {
                self.offer(|| Copied::End);
                self.copies.clear();
            }
            // The original failed: so do the copies (their senders drop unended).
            Poll::Ready(Some(Err(_))) => self.copies.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A mirror's copy of the body, fed by the tee.
struct CopyBody {
    receiver: mpsc::Receiver<Copied>,
    ended: bool,
}

impl Body for CopyBody {
    type Data = Bytes;
    type Error = upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(Copied::Frame(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Copied::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(
                "mirror copy aborted: the mirror fell behind or the original failed".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tee(chunks: &[&'static str], mirrors: usize) -> (Tee, Vec<CopyBody>) {
        let body = http_body_util::StreamBody::new(stream_of(chunks));
        let mut copies = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..mirrors {
            let (sender, receiver) = mpsc::channel(COPY_QUEUE);
            senders.push(sender);
            copies.push(CopyBody {
                receiver,
                ended: false,
            });
        }
        (
            Tee {
                inner: body.boxed(),
                copies: senders,
            },
            copies,
        )
    }

    fn stream_of(
        chunks: &[&'static str],
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, upstream::BoxError>> + Send + Sync + 'static
    {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        futures_util::stream::iter(frames)
    }

    #[test]
    fn a_copy_says_it_is_one_in_its_host() {
        for (host, shadowed_host) in [
            ("reviews:9080", "reviews-shadow:9080"),
            ("reviews", "reviews-shadow"),
            ("[fd00::1]:80", "[fd00::1]-shadow:80"),
        ] {
            let mut copy = Request::builder()
                .uri(format!("http://{host}/x"))
                .header(header::HOST, host)
                .body(
                    http_body_util::Empty::new()
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .unwrap();
            shadowed(&mut copy);
            assert_eq!(copy.headers()[header::HOST], shadowed_host);
            assert_eq!(copy.uri().authority().unwrap().as_str(), shadowed_host);
        }
    }

    #[tokio::test]
    async fn a_mirror_gets_the_whole_body_and_the_original_is_unchanged() {
        let (tee, copies) = tee(&["hello ", "mirror ", "world"], 2);
        let original = tee.collect().await.unwrap().to_bytes();
        assert_eq!(original, "hello mirror world");
        for copy in copies {
            assert_eq!(
                copy.collect().await.unwrap().to_bytes(),
                "hello mirror world"
            );
        }
    }

    #[tokio::test]
    async fn a_mirror_that_falls_behind_is_aborted_not_truncated_and_the_original_goes_on() {
        let chunks: Vec<&'static str> = vec!["x"; COPY_QUEUE + 10];
        let (tee, mut copies) = tee(&chunks, 1);
        let original = tee.collect().await.unwrap().to_bytes();
        assert_eq!(original.len(), COPY_QUEUE + 10);
        let copy = copies.remove(0);
        let error = copy.collect().await.err().map(|e| e.to_string());
        assert!(
            error.is_some_and(|e| e.contains("fell behind")),
            "a lagging copy must end in an error"
        );
    }

    #[tokio::test]
    async fn a_failed_original_aborts_the_copy() {
        let frames: Vec<Result<Frame<Bytes>, upstream::BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Err("client went away".into()),
        ];
        let (sender, receiver) = mpsc::channel(COPY_QUEUE);
        let tee = Tee {
            inner: http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed(),
            copies: vec![sender],
        };
        assert!(tee.collect().await.is_err());
        let copy = CopyBody {
            receiver,
            ended: false,
        };
        assert!(copy.collect().await.is_err());
    }
}
