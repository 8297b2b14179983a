"""Webhooks: the I/O around controller.core.hooks (gates asked, verdicts delivered; docs/webhooks.md)."""
