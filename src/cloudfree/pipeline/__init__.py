"""Drive the deployed pipeline: deploy (SAM), run/follow executions, the demo."""
