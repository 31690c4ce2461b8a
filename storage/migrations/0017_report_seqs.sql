-- FleetTUI schema version 17: the MQTT source's record of the reports it stored (issue 11).
-- Written in the same transaction as the reports' rows; a restarted daemon seeds its
-- duplicate check from the recent ones, so a QoS 1 message the broker redelivers
-- after a crash (stored, not yet acknowledged) is not stored twice.
CREATE TABLE report_seqs (
    ts    TIMESTAMP NOT NULL,   -- when the daemon received the report
    host  VARCHAR NOT NULL,
    boot  VARCHAR NOT NULL,     -- the agent's run id
    seq   BIGINT NOT NULL       -- the report's sequence number within that boot
);
