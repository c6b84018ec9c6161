"""MCP tools: config, security rules and the client manager behind /v1/mcp/*."""
