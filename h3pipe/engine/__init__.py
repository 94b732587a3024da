"""Load, validate, plan, execute and record: between the CLI and operations/storage."""
