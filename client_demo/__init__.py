"""The browser client (index.html, client.js), served by the server as static files."""
