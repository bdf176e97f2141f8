"""Hook specifications: ``host`` (the Open CRM host contract) and ``horscompte`` (this
plugin's own extension hooks)."""
