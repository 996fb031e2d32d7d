#include "sinks/postgres/statements.hpp"

namespace tailbox::sinks::postgres {

std::string insert_sql(const std::string& table) {
  // The batch arrives as one array per column (binary parameters) and is
  // unnested into rows: one statement, so one transaction and one round trip.
  // Unnamed, so it keeps no state in the session (a pooler in transaction
  // mode can hand the next batch to another server connection).
  return "INSERT INTO " + table +
         " (key, host, source, path, file_offset, ingest_time, event_time, message, fields)\n"
         "SELECT key, host, source, path, file_offset,\n"
         "       timestamptz 'epoch' + ingest_ms * interval '1 millisecond',\n"
         "       timestamptz 'epoch' + event_us * interval '1 microsecond',\n"
         "       message, fields::jsonb\n"
         "FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9)\n"
         "     AS u(key, host, source, path, file_offset, ingest_ms, event_us, message, fields)\n"
         "ON CONFLICT (key) DO NOTHING";
}

namespace {
constexpr const char* kColumns =
    "key, host, source, path, file_offset, ingest_time, event_time, message, fields";
}

std::string copy_sql(const std::string& table) {
  return "COPY " + table + " (" + kColumns + ") FROM STDIN (FORMAT binary)";
}

std::string copy_check_sql(const std::string& table) {
  // The name is a checked plain identifier (valid_table_name): safe in a literal.
  return "SELECT c.relkind IN ('r', 'p') AND NOT c.relrowsecurity AND (\n"
         "  SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0\n"
         "    AND NOT a.attisdropped AND (a.attname, a.atttypid) IN (\n"
         "      ('key', 25), ('key', 1043), ('host', 25), ('host', 1043), ('source', 25),\n"
         "      ('source', 1043), ('path', 25), ('path', 1043), ('file_offset', 20),\n"
         "      ('ingest_time', 1184), ('event_time', 1184), ('message', 25),\n"
         "      ('message', 1043), ('fields', 3802))) = 9\n"
         "FROM pg_class c WHERE c.oid = '" + table + "'::regclass";
}

std::string setup_sql(const std::string& table, bool create_table) {
  std::string s;
  if (create_table)
    s += "CREATE TABLE IF NOT EXISTS " + table +
         " (\n"
         "  key         text PRIMARY KEY,  -- idempotency key: host_id/file uid/offset\n"
         "  host        text NOT NULL,\n"
         "  source      text NOT NULL,\n"
         "  path        text NOT NULL,\n"
         "  file_offset bigint NOT NULL,\n"
         "  ingest_time timestamptz NOT NULL,\n"
         "  event_time  timestamptz,       -- the parsed field time/timestamp (RFC 3339)\n"
         "  message     text NOT NULL,\n"
         "  fields      jsonb\n"
         ");\n";
  // Planning the INSERT (without running it) checks the table: its columns,
  // their types, and the unique key that ON CONFLICT (key) needs.
  s += "PREPARE tailbox_check (text[], text[], text[], text[], int8[], int8[], int8[], text[], "
       "text[]) AS " + insert_sql(table) +
       ";\nEXPLAIN (COSTS OFF) EXECUTE tailbox_check (NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
       "NULL, NULL);\nDEALLOCATE tailbox_check";
  return s;
}

}  // namespace tailbox::sinks::postgres
