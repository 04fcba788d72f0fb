//! The app's pages: plain, semantic HTML; every dynamic text escaped here.

use std::fmt::Write as _;

use crate::view::View;

/// Escapes text for HTML content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page. `head_extra` is trusted markup.
pub(crate) fn page(title: &str, head_extra: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Example RP</title>\
         <link rel=\"stylesheet\" href=\"/static/style.css\">{head_extra}</head>\
         <body><header><p class=\"brand\">Example RP</p></header>\
         <main>{main}</main>\
         <footer><p>A reference integration of the oidc-dtr SDK.</p></footer></body></html>\n",
        escape(title)
    )
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    )
}

/// The start page.
pub(crate) fn start(csrf: &str, has_verification: bool) -> String {
    let mut main = String::from(
        "<h1>Open an account</h1>\
         <p>Before we can open your account we need to verify your identity. \
         Our identity provider checks your documents; this can take from a few \
         seconds to a few days. You can close this page and come back later.</p>",
    );
    if has_verification {
        main.push_str("<p><a href=\"/verification\">See the state of your verification</a></p>");
    }
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/verify\">{}\
         <details><summary>Developer options</summary>\
         <fieldset><legend>How the provider sends you back</legend>\
         <label><input type=\"radio\" name=\"response_mode\" value=\"query\" checked> Redirect (query)</label>\
         <label><input type=\"radio\" name=\"response_mode\" value=\"form_post\" id=\"mode-form-post\"> Form post</label>\
         </fieldset></details>\
         <p><button type=\"submit\" id=\"verify\">Verify my identity</button></p></form>",
        csrf_field(csrf)
    );
    page("Verify your identity", "", &main)
}

/// The inner markup of the live status region.
pub(crate) fn status_inner(view: &View, csrf: &str) -> String {
    match view {
        View::Pending { progress, retrying } => format!(
            "<h2>We are checking your documents</h2>\
             <p class=\"progress\">{}</p>{}\
             <p>This page updates by itself when the provider decides.</p>\
             <form method=\"post\" action=\"/verification/cancel\">{}\
             <button type=\"submit\" id=\"cancel\">Cancel the verification</button></form>",
            escape(
                progress
                    .as_deref()
                    .unwrap_or("Your documents were sent to the provider.")
            ),
            retrying
                .as_deref()
                .map(|cause| format!(
                    "<p class=\"retrying\">Retrying… the provider did not answer our last \
                     check ({}); we keep trying.</p>",
                    escape(cause)
                ))
                .unwrap_or_default(),
            csrf_field(csrf)
        ),
        View::Verified {
            display_name,
            claims,
        } => {
            let mut s = format!(
                "<h2>Identity verified</h2><p class=\"verified\">Verified as <strong>{}</strong>.</p>\
                 <dl class=\"claims\">",
                escape(display_name)
            );
            for (k, v) in claims {
                let _ = write!(s, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
            }
            s.push_str("</dl>");
            s.push_str(&next_steps(csrf, "Verify again"));
            s
        }
        View::Denied { reason } => format!(
            "<h2>Verification denied</h2><p>The provider could not verify your identity.</p>\
             <p class=\"reason\">Reason: {}</p>{}",
            escape(reason.as_deref().unwrap_or("none given")),
            next_steps(csrf, "Try again")
        ),
        View::Expired { reason } => format!(
            "<h2>Verification expired</h2><p class=\"reason\">{}</p>{}",
            escape(reason),
            next_steps(csrf, "Try again")
        ),
        View::Cancelled => format!(
            "<h2>Verification cancelled</h2><p>You cancelled the verification.</p>{}",
            next_steps(csrf, "Try again")
        ),
        View::Failed { reason } => format!(
            "<h2>Verification failed</h2><p class=\"reason\">{}</p>{}",
            escape(reason),
            next_steps(csrf, "Try again")
        ),
    }
}

/// What a user can do once a verification has ended: start another one,
/// go back to the start, or sign out.
fn next_steps(csrf: &str, again: &str) -> String {
    format!(
        "<div class=\"next-steps\">\
         <form method=\"post\" action=\"/verify\">{csrf}\
         <button type=\"submit\" id=\"verify\">{again}</button></form>\
         <form method=\"post\" action=\"/signout\">{csrf}\
         <button type=\"submit\" id=\"sign-out\">Sign out</button></form>\
         <p><a href=\"/\" id=\"back-to-start\">Back to the start</a></p></div>",
        csrf = csrf_field(csrf),
        again = escape(again),
    )
}

/// The verification page: a live region around [`status_inner`].
pub(crate) fn verification(view: &View, csrf: &str) -> String {
    let head = if view.is_final() {
        String::new()
    } else {
        // Without JavaScript, the page refreshes itself now and then.
        "<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>\
         <script src=\"/static/live.js\" defer></script>"
            .to_owned()
    };
    let main = format!(
        "<h1>Your identity verification</h1>\
         <section id=\"status\" role=\"status\" aria-live=\"polite\" aria-atomic=\"true\" \
         data-state=\"{}\" data-events=\"/verification/events\">{}</section>",
        view.kind(),
        status_inner(view, csrf)
    );
    page("Your identity verification", &head, &main)
}

/// An error page.
pub(crate) fn error(title: &str, message: &str) -> String {
    page(
        title,
        "",
        &format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the start</a></p>",
            escape(title),
            escape(message)
        ),
    )
}

/// The page that re-posts a `form_post` response from our own origin, for
/// browsers that did not send the `SameSite=Lax` session cookie with the
/// OP's cross-site POST.
pub(crate) fn repost(fields: &[(String, String)]) -> String {
    let mut inputs = String::new();
    for (k, v) in fields {
        let _ = write!(
            inputs,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(k),
            escape(v)
        );
    }
    page(
        "Continue",
        "<script src=\"/static/continue.js\" defer></script>",
        &format!(
            "<h1>Almost done</h1><form method=\"post\" action=\"/callback\" id=\"repost\">{inputs}\
             <input type=\"hidden\" name=\"rp_reposted\" value=\"1\">\
             <button type=\"submit\">Continue</button></form>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_every_dynamic_text() {
        let v = View::Denied {
            reason: Some("<script>alert(1)</script>\"'&".into()),
        };
        let s = status_inner(&v, "c\"sr<f");
        assert!(!s.contains("<script>"), "{s}");
        assert!(s.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(s.contains("value=\"c&quot;sr&lt;f\""), "{s}");
    }

    #[test]
    fn every_final_page_offers_a_next_step() {
        for v in [
            View::Verified {
                display_name: "A".into(),
                claims: vec![],
            },
            View::Denied { reason: None },
            View::Expired { reason: "r".into() },
            View::Cancelled,
            View::Failed { reason: "r".into() },
        ] {
            let s = status_inner(&v, "t");
            for what in ["action=\"/verify\"", "action=\"/signout\"", "href=\"/\""] {
                assert!(s.contains(what), "{} lacks {what}: {s}", v.kind());
            }
        }
        let pending = status_inner(
            &View::Pending {
                progress: None,
                retrying: None,
            },
            "t",
        );
        assert!(
            !pending.contains("/signout"),
            "no way out while pending but cancel"
        );
    }

    #[test]
    fn pending_page_has_a_live_region_and_a_no_script_refresh() {
        let s = verification(
            &View::Pending {
                progress: None,
                retrying: None,
            },
            "t",
        );
        assert!(s.contains("aria-live=\"polite\""));
        assert!(s.contains("<noscript><meta http-equiv=\"refresh\""));
        let done = verification(
            &View::Verified {
                display_name: "A".into(),
                claims: vec![],
            },
            "t",
        );
        assert!(!done.contains("refresh"), "a final page stops refreshing");
        assert!(!done.contains("live.js"));
    }
}
