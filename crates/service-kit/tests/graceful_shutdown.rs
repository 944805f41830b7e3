//! A service stops taking work on shutdown but finishes what it already accepted.

use axum::Router;
use axum::routing::get;
use service_config::HttpConfig;
use service_kit::Server;
use service_kit::readiness::Readiness;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let entered_tx = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
    let release = Arc::new(Notify::new());
    let handler_release = Arc::clone(&release);
    let routes = Router::new().route(
        "/slow",
        get(move || {
            let entered = entered_tx.lock().unwrap().take();
            let release = Arc::clone(&handler_release);
            async move {
                if let Some(entered) = entered {
                    let _ = entered.send(());
                }
                release.notified().await;
                "done"
            }
        }),
    );
    let server = Server::bind(&HttpConfig::default()).await.unwrap();
    let port = server.port();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.serve("test", routes, Readiness::new(), stop.clone()));

    let in_flight = tokio::spawn(reqwest::get(format!("http://127.0.0.1:{port}/slow")));
    entered_rx.await.expect("the request reached its handler");
    stop.cancel();

    test_support::poll_until(Duration::from_secs(5), "the listener to close", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        !serving.is_finished(),
        "still serving the in-flight request"
    );

    release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the server returns once the request is done")
        .unwrap()
        .unwrap();
}
