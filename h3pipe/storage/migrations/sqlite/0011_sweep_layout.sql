-- Scenario sweeps (issue 14): a result's layout, as JSON: the key columns its rows carry
-- besides h3_index (scenario and one per dimension) and the bands its statistic columns
-- come per ({"keys": [...], "bands": {"key": "return_period", "names": [...]}}); '{}' for a
-- result of one row per cell.
ALTER TABLE results ADD COLUMN layout TEXT NOT NULL DEFAULT '{}';
