"""What faces the backends: endpoints and their pools, the balancer, the WebSocket relay, socket I/O."""
