"""Alert rules, the alert lifecycle, and delivery through email webhooks and SMTP."""
