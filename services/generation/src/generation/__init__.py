"""The generation service: jobs, provider hand-off, renders and variants."""
