"""opencrm-horscompte: account-less access to online procedures for an Open CRM host."""

__version__ = "0.1.0"
