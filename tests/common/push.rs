//! A fake push notification gateway for tests: an HTTP/1.1 server on loopback that records
//! every POST body and answers with scripted status codes (200 once the script is used up).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    posts: Vec<String>,
    connections: usize,
    script: VecDeque<u16>,
}

pub struct FakeGateway {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGateway {
    pub async fn start() -> FakeGateway {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", l.local_addr().unwrap());
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let st = st.clone();
                st.lock().unwrap().connections += 1;
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        async move {
                            let ok = req.method() == hyper::Method::POST
                                && req.uri().path() == "/notify";
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let body =
                                String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                            let status = if ok {
                                let mut s = st.lock().unwrap();
                                s.posts.push(body);
                                s.script.pop_front().unwrap_or(200)
                            } else {
                                404
                            };
                            let resp = hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        FakeGateway { url, state, task }
    }

    /// Status codes for the next POSTs, in order.
    pub fn script(&self, statuses: &[u16]) {
        self.state.lock().unwrap().script.extend(statuses);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    pub fn posts(&self) -> Vec<String> {
        self.state.lock().unwrap().posts.clone()
    }

    /// Wait until at least `n` POSTs arrived (panics after `secs`); returns all of them.
    pub async fn wait_posts(&self, n: usize, secs: u64) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let p = self.posts();
            if p.len() >= n {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} POSTs, got {p:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
