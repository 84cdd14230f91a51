-- The node this runs on (its cluster node id), called with the key a write
-- just changed: redis-rs sends it where it sent that write, following an
-- ASK to the node a moving slot's keys already went to. The store then
-- sends WAIT there too (`durable.rs`).
-- KEYS[1] the key the write changed
return redis.call('CLUSTER', 'MYID')
