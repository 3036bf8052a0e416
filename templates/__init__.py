"""The built-in email templates, shipped in the wheel as the package `securesend_templates`
(`TEMPLATES_DIR` overrides them: README, "Email templates")."""
