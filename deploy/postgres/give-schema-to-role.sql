-- Included by upgrade-to-service-roles.sql: hands the public schema's objects of the
-- current database to :role. A sequence owned by a column follows its table.
SELECT set_config('interior.new_owner', :'role', false);
DO $$
DECLARE
    new_owner text := current_setting('interior.new_owner');
    item record;
BEGIN
    FOR item IN
        SELECT format('ALTER %s %I.%I OWNER TO %I',
                      CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                     WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                      n.nspname, c.relname, new_owner) AS statement
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT 1 FROM pg_depend d
              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE item.statement;
    END LOOP;
    FOR item IN
        SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, new_owner)
               AS statement
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'
    LOOP
        EXECUTE item.statement;
    END LOOP;
END
$$;
