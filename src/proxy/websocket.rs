//! Protocol upgrades (WebSocket) through the proxy: the upgrade request goes to the upstream
//! with `Connection: upgrade` and its `Upgrade`; when the upstream answers 101, both connections
//! are taken over from hyper (its upgrade mechanism on the browser's side and on the
//! upstream's) and bytes are copied both ways until either side closes. The frames are not
//! read: what WebSocket carries is the upstream's business, as for any body.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Splices the browser's upgraded connection to the upstream's, in the background.
pub fn splice(browser: OnUpgrade, upstream: OnUpgrade, request_id: String) {
    tokio::spawn(async move {
        let (b, u) = match tokio::try_join!(browser, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::info!(request_id = %request_id, error = %e, "a proxied upgrade did not complete");
                return;
            }
        };
        let mut b = TokioIo::new(b);
        let mut u = TokioIo::new(u);
        match tokio::io::copy_bidirectional(&mut b, &mut u).await {
            Ok((up, down)) => {
                tracing::debug!(request_id = %request_id, up, down, "a proxied upgrade closed");
            }
            Err(e) => {
                tracing::debug!(request_id = %request_id, error = %e, "a proxied upgrade ended");
            }
        }
    });
}
