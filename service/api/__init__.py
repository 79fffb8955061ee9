"""HTTP surface: aiohttp handlers, authentication, the error envelope and the request size limit."""
