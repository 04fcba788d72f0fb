//! The fleet's notices over LISTEN/NOTIFY: the payload format (a kind
//! letter and the record key in hex) and the LISTEN task that forwards
//! them and reconnects.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::store::{RecordKey, StoreNotice};

use super::Inner;
use super::decode::Key;

/// A NOTIFY payload: a kind letter and the record key in hex (never the id).
pub(super) fn notice_payload(kind: char, key: &Key) -> String {
    let mut s = String::with_capacity(65);
    s.push(kind);
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub(super) fn parse_notice(payload: &str) -> Option<StoreNotice> {
    let mut chars = payload.chars();
    let kind = chars.next()?;
    let hex = chars.as_str();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    match kind {
        'w' => Some(StoreNotice::Wake(RecordKey(key))),
        'f' => Some(StoreNotice::Finished(RecordKey(key))),
        'q' => Some(StoreNotice::Quarantined(RecordKey(key))),
        _ => None,
    }
}

/// The LISTEN connection: forwards the fleet's notices to `tx`, and
/// reconnects (with a pause that grows to 5 s) whenever the connection
/// drops or stops answering, announcing [`StoreNotice::Reconnected`] each
/// time it is back. Ends when the store is dropped or closed, or nobody
/// listens any more.
pub(super) async fn listen_task(
    inner: std::sync::Weak<Inner>,
    tx: tokio::sync::broadcast::Sender<StoreNotice>,
) {
    use tokio_postgres::AsyncMessage;
    let mut pause = Duration::from_millis(100);
    let mut first = true;
    loop {
        let Some((config, channel, timeout)) = inner.upgrade().and_then(|i| {
            (!i.closed.load(Ordering::Acquire))
                .then(|| (i.pg_config.clone(), i.channel.clone(), i.timeout))
        }) else {
            return;
        };
        let connected = tokio::time::timeout(timeout, config.connect(NoTls)).await;
        if let Ok(Ok((client, mut conn))) = connected {
            let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            if msg_tx.send(n.payload().to_owned()).is_err() {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    }
                }
            });
            let listening = tokio::time::timeout(
                timeout,
                client.batch_execute(&format!("LISTEN \"{channel}\"")),
            )
            .await;
            if matches!(listening, Ok(Ok(()))) {
                pause = Duration::from_millis(100);
                if !first {
                    let _ = tx.send(StoreNotice::Reconnected);
                }
                first = false;
                // A connection cut without a FIN is only noticed by asking:
                // a cheap query every few seconds.
                let mut probe = tokio::time::interval(Duration::from_secs(2));
                loop {
                    tokio::select! {
                        m = msg_rx.recv() => match m {
                            Some(p) => {
                                if let Some(n) = parse_notice(&p)
                                    && tx.send(n).is_err()
                                {
                                    driver.abort();
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = probe.tick() => {
                            let alive = inner.upgrade().is_some_and(|i| !i.closed.load(Ordering::Acquire));
                            if !alive || tx.receiver_count() == 0 {
                                driver.abort();
                                return;
                            }
                            let ok = tokio::time::timeout(timeout.min(Duration::from_secs(5)), client.simple_query("SELECT 1")).await;
                            if !matches!(ok, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
            }
            driver.abort();
            tracing::warn!("the PostgreSQL notification connection dropped; reconnecting");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
