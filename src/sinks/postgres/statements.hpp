// Every SQL statement the postgres sink sends, named in one place. Pure;
// thread-safe.
#pragma once

#include <string>

namespace tailbox::sinks::postgres {

// PostgreSQL type OIDs of the INSERT's parameters and of their elements.
inline constexpr unsigned kTextOid = 25, kInt8Oid = 20, kTextArrayOid = 1009, kInt8ArrayOid = 1016;
inline constexpr unsigned kInsertTypes[9] = {kTextArrayOid, kTextArrayOid, kTextArrayOid,
                                             kTextArrayOid, kInt8ArrayOid, kInt8ArrayOid,
                                             kInt8ArrayOid, kTextArrayOid, kTextArrayOid};

// One batch: INSERT ... SELECT FROM unnest($1..$9) ON CONFLICT (key) DO
// NOTHING, the batch as one binary array per column (key, host, source,
// path, file_offset, ingest_ms, event_us, message, fields).
std::string insert_sql(const std::string& table);

// One batch, the usual way: COPY ... FROM STDIN (FORMAT binary) into the
// same 9 columns. One statement, so one transaction: a key already in the
// table fails all of it (23505), and the batch is then sent again with
// insert_sql(), whose ON CONFLICT (key) DO NOTHING skips what is there.
std::string copy_sql(const std::string& table);

// One row, one value: "t" when the binary COPY stream (copy_binary) fits the
// table: a plain or partitioned table without row-level security whose 9
// columns have the documented types (text or varchar; bigint; timestamptz;
// jsonb). Else the sink inserts every batch with insert_sql(), whose casts
// fit more tables.
std::string copy_check_sql(const std::string& table);

// Run on every new connection: creates the table when `create_table`, then
// plans (without running) the INSERT, which checks the table's columns, their
// types and its unique key.
std::string setup_sql(const std::string& table, bool create_table);

// Run after a failed batch left a transaction open.
inline constexpr const char* kRollback = "ROLLBACK";

}  // namespace tailbox::sinks::postgres
