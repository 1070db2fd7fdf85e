-- events_org_node_time_idx (0010) repeats events_node_idx (0005, node_id + occurred_at): node ids
-- are unique across organizations, so the organization column adds nothing, and the events table
-- is the most written one. Node filters (nodeId, and the cursor after them) use events_node_idx.
DROP INDEX IF EXISTS events_org_node_time_idx;
