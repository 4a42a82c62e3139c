"""The node: builds the parts and routes events between them."""
