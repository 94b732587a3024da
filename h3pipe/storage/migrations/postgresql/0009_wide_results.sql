-- Results move from one long table per theme (a row per cell and statistic, partitioned by
-- dataset) to one wide table per dataset (a row per cell, a column per statistic): a
-- publication loads a sixth of the rows. h3.stats_<theme> becomes a view giving the same
-- long rows as before. Each old partition becomes the wide table of the same name.
DO $$
DECLARE
    parent record;
    part record;
    ds text;
    stats text[];
    legacy text;
    defs text;
    picks text;
    vals text;
    pieces text[];
BEGIN
    FOR parent IN SELECT c.oid, c.relname FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'h3' AND c.relkind = 'p' AND c.relname LIKE 'stats\_%'
    LOOP
        pieces := '{}';
        FOR part IN SELECT p.oid, p.relname, pg_get_expr(p.relpartbound, p.oid) AS bound
                    FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
                    WHERE i.inhparent = parent.oid
        LOOP
            legacy := 'h3pipe_legacy_' || part.oid;
            EXECUTE format('ALTER TABLE h3.%I DETACH PARTITION h3.%I', parent.relname,
                           part.relname);
            EXECUTE format('ALTER TABLE h3.%I RENAME TO %I', part.relname, legacy);
            SELECT r.dataset INTO ds FROM h3pipe.results r
                WHERE format('FOR VALUES IN (%L)', r.dataset) = part.bound LIMIT 1;
            IF ds IS NULL THEN
                EXECUTE format('SELECT dataset FROM h3.%I LIMIT 1', legacy) INTO ds;
            END IF;
            IF ds IS NULL THEN  -- an empty partition no result names: nothing to keep
                EXECUTE format('DROP TABLE h3.%I', legacy);
                CONTINUE;
            END IF;
            -- The statistics in the order the results list them, then any others.
            EXECUTE format(
                'SELECT array_agg(stat ORDER BY pos NULLS LAST, stat) FROM ('
                '  SELECT stat, min(pos) AS pos FROM ('
                '    SELECT j.c AS stat, j.o AS pos FROM h3pipe.results r, '
                '      json_array_elements_text(r.columns::json) WITH ORDINALITY AS j(c, o) '
                '      WHERE r.dataset = %L '
                '    UNION ALL SELECT DISTINCT stat, NULL::bigint FROM h3.%I) s GROUP BY stat) x',
                ds, legacy) INTO stats;
            stats := coalesce(stats, '{}');
            SELECT coalesce(string_agg(format(', %I %s', s, CASE WHEN s = 'variety'
                       THEN 'bigint' ELSE 'double precision' END), ''), ''),
                   coalesce(string_agg(format(', max(value) FILTER (WHERE stat = %L)%s', s,
                       CASE WHEN s = 'variety' THEN '::bigint' ELSE '' END), ''), ''),
                   string_agg(format('(%L, t.%I::double precision)', s, s), ', ')
              INTO defs, picks, vals FROM unnest(stats) AS s;
            EXECUTE format('CREATE TABLE h3.%I (resolution smallint NOT NULL, scope_key text '
                           'NOT NULL, h3_index text NOT NULL, run_id text NOT NULL%s)',
                           part.relname, defs);
            EXECUTE format('INSERT INTO h3.%I SELECT resolution, scope_key, h3_index, '
                           'min(run_id)%s FROM h3.%I GROUP BY resolution, scope_key, h3_index',
                           part.relname, picks, legacy);
            EXECUTE format('DROP TABLE h3.%I', legacy);
            EXECUTE format('CREATE INDEX ON h3.%I USING brin (resolution, scope_key) '
                           'WITH (autosummarize = on)', part.relname);
            EXECUTE format('ANALYZE h3.%I', part.relname);
            UPDATE h3pipe.results SET path = 'h3."' || replace(part.relname, '"', '""') || '"'
                WHERE dataset = ds AND path IN (
                    'h3."' || replace(parent.relname, '"', '""') || '"',
                    format('h3.%I', parent.relname));
            IF vals IS NOT NULL THEN
                pieces := pieces || format(
                    'SELECT %L::text AS dataset, t.resolution, t.scope_key, t.h3_index, '
                    'v.stat, v.value, t.run_id FROM h3.%I t CROSS JOIN LATERAL (VALUES %s) '
                    'AS v(stat, value)', ds, part.relname, vals);
            END IF;
        END LOOP;
        EXECUTE format('DROP TABLE h3.%I', parent.relname);
        IF array_length(pieces, 1) > 0 THEN
            EXECUTE format('CREATE VIEW h3.%I AS %s', parent.relname,
                           array_to_string(pieces, ' UNION ALL '));
        END IF;
    END LOOP;
END
$$;
