-- Real fleets (issue 9): what a gather dropped, and per-device link kinds.
--
-- collector_runs.dropped / dropped_reasons: series a gather read but could not
-- store as a value (a field with no column, a DCGM blank sentinel, MEMORY_TEMP 0
-- without a memory sensor), counted by reason: "reason x n; reason x n".
ALTER TABLE collector_runs ADD COLUMN dropped BIGINT DEFAULT 0;
ALTER TABLE collector_runs ADD COLUMN dropped_reasons VARCHAR;

-- link_samples.kind gains 'iwarp' (Intel i40iw/irdma, Chelsio cxgb4 devices sit on
-- hosts beside InfiniBand HCAs). DuckDB cannot alter a CHECK: rebuild the table.
CREATE TABLE link_samples_v5 (
    ts               TIMESTAMP NOT NULL,
    host             VARCHAR NOT NULL,
    kind             VARCHAR NOT NULL CHECK (kind IN ('nvlink', 'ib', 'efa', 'roce', 'iwarp')),
    port             VARCHAR NOT NULL,
    gpu_uuid         VARCHAR,
    tx_bytes_per_s   DOUBLE,
    rx_bytes_per_s   DOUBLE,
    line_rate_bytes_per_s DOUBLE,
    errors           BIGINT,
    link_up          BOOLEAN,
    source           VARCHAR
);
INSERT INTO link_samples_v5 SELECT ts, host, kind, port, gpu_uuid, tx_bytes_per_s,
    rx_bytes_per_s, line_rate_bytes_per_s, errors, link_up, source FROM link_samples;
DROP TABLE link_samples;
ALTER TABLE link_samples_v5 RENAME TO link_samples;
