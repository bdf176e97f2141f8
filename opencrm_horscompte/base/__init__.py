"""What the plugin's capabilities share: database, tables, rendering, i18n, signed tokens,
rate limits, audit, email addresses, route paths and the typed facade over the hooks."""
