"""The plugin host, sessions, the HTTP/WebRTC app and the command line."""
