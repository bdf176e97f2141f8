"""Host-side code, not the plugin: the plugin loader an Open CRM host can use
(:mod:`.loader`) and the reference host (:mod:`.refhost`). The plugin never imports it."""
