// Re-posts the provider's form_post answer from this origin (see /callback).
document.getElementById("repost").submit();
