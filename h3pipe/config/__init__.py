"""What a project declares: its files found, parsed, validated and turned into specs
(:class:`~h3pipe.config.project.ProjectConfig`), the JSON Schemas they follow, and the step
graph."""
