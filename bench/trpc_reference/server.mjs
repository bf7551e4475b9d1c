// The reference (bench.run --reference): the original stack's shape (tRPC v11, drizzle, node-postgres), for a same-run
// ratio. Issue 7 gives the original's req/s from another machine; machines of this kind differ
// by up to 2x between sessions, so bench.run (--reference) measures this beside NurtureHub.
// Only what the five scenarios call: contacts.get, list, create and assignCategory, against the
// same schema.sql, the same dataset and the same bearer tokens, with the token checked by a
// query on every call. Not the product: no tests, no other procedures.
import cluster from "node:cluster";
import { createHash } from "node:crypto";

import { initTRPC, TRPCError } from "@trpc/server";
import { createHTTPServer } from "@trpc/server/adapters/standalone";
import { and, desc, eq, isNull, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import { pgTable, text, timestamp, uuid } from "drizzle-orm/pg-core";
import { parsePhoneNumberWithError } from "libphonenumber-js";
import pg from "pg";
import { z } from "zod";

const CATEGORIES = [
  "seller", "buyer", "landlord", "tenant_applicant", "property_investor", "btl_investor",
  "active_seller", "active_buyer", "managed_landlord", "active_tenant",
  "active_property_investor", "active_btl_investor",
];
const EXISTING = new Set(CATEGORIES.slice(6));
const groupOf = (category) => (category == null ? null : EXISTING.has(category) ? "existing_client" : "prospect");

// Schema: the columns these procedures touch, as drizzle declares them.
const apiTokens = pgTable("api_tokens", {
  organisationId: uuid("organisation_id").notNull(),
  id: uuid("id").notNull(),
  userId: uuid("user_id").notNull(),
  tokenHash: text("token_hash").notNull(),
  revokedAt: timestamp("revoked_at", { withTimezone: true }),
});
const memberships = pgTable("memberships", {
  organisationId: uuid("organisation_id").notNull(),
  userId: uuid("user_id").notNull(),
  role: text("role").notNull(),
});
const contacts = pgTable("contacts", {
  organisationId: uuid("organisation_id").notNull(),
  id: uuid("id").notNull().defaultRandom(),
  firstName: text("first_name"),
  lastName: text("last_name"),
  email: text("email"),
  phone: text("phone"),
  postcode: text("postcode"),
  consentStatus: text("consent_status").notNull(),
  consentTimestamp: timestamp("consent_timestamp", { withTimezone: true }),
  importSource: text("import_source").notNull(),
  crmConnectionId: uuid("crm_connection_id"),
  externalId: text("external_id"),
  activeCategory: text("active_category"),
  // As text: a JS Date keeps milliseconds, and the keyset cursor needs PostgreSQL's microseconds.
  createdAt: timestamp("created_at", { withTimezone: true, mode: "string" }).notNull().defaultNow(),
  updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
});
const assignments = pgTable("lead_category_assignments", {
  organisationId: uuid("organisation_id").notNull(),
  id: uuid("id").notNull().defaultRandom(),
  contactId: uuid("contact_id").notNull(),
  category: text("category").notNull(),
  categoryGroup: text("category_group"),
  assignedAt: timestamp("assigned_at", { withTimezone: true }).notNull().defaultNow(),
  supersededAt: timestamp("superseded_at", { withTimezone: true }),
  assignedBy: uuid("assigned_by"),
  reason: text("reason"),
});
const auditLog = pgTable("audit_log", {
  organisationId: uuid("organisation_id"),
  actorUserId: uuid("actor_user_id"),
  actorTokenId: uuid("actor_token_id"),
  action: text("action").notNull(),
  targetType: text("target_type"),
  targetId: text("target_id"),
  changedFields: text("changed_fields").array().notNull(),
  requestId: text("request_id"),
});

// Idle connections stay open, as psycopg's pool keeps them: no reconnect costs mid-run.
const pool = new pg.Pool({
  connectionString: process.env.DATABASE_URL,
  max: Number(process.env.POOL_SIZE || 10),
  idleTimeoutMillis: 0,
});
const db = drizzle(pool);

const contactColumns = {
  id: contacts.id,
  firstName: contacts.firstName,
  lastName: contacts.lastName,
  email: contacts.email,
  phone: contacts.phone,
  postcode: contacts.postcode,
  consentStatus: contacts.consentStatus,
  consentTimestamp: contacts.consentTimestamp,
  importSource: contacts.importSource,
  crmConnectionId: contacts.crmConnectionId,
  externalId: contacts.externalId,
  category: contacts.activeCategory,
  createdAt: contacts.createdAt,
  updatedAt: contacts.updatedAt,
};
const withGroup = (row) => ({ ...row, group: groupOf(row.category) });

// Context: the bearer token's principal, one query per call.
async function createContext({ req }) {
  const header = req.headers.authorization || "";
  const token = header.startsWith("Bearer ") ? header.slice(7) : null;
  if (!token) return { principal: null };
  const hash = "\\x" + createHash("sha256").update(token).digest("hex");
  const [principal] = await selectPrincipal.execute({ hash });
  return { principal: principal ?? null };
}

// The hot reads as drizzle prepared statements: SQL built once, prepared once per connection.
const selectPrincipal = db
  .select({ tokenId: apiTokens.id, organisationId: apiTokens.organisationId, userId: apiTokens.userId, role: memberships.role })
  .from(apiTokens)
  .innerJoin(memberships, and(eq(memberships.organisationId, apiTokens.organisationId), eq(memberships.userId, apiTokens.userId)))
  .where(and(eq(apiTokens.tokenHash, sql.placeholder("hash")), isNull(apiTokens.revokedAt)))
  .prepare("select_principal");

const t = initTRPC.context().create();
const authed = t.procedure.use(({ ctx, next }) => {
  if (!ctx.principal) throw new TRPCError({ code: "UNAUTHORIZED" });
  return next({ ctx: { principal: ctx.principal } });
});

const audit = (tx, ctx, action, targetId, changedFields) =>
  tx.insert(auditLog).values({
    organisationId: ctx.principal.organisationId,
    actorUserId: ctx.principal.userId,
    actorTokenId: ctx.principal.tokenId,
    action,
    targetType: "contact",
    targetId,
    changedFields,
  });

const category = z.enum(CATEGORIES);
const ukPhone = z.string().transform((value, check) => {
  try {
    return parsePhoneNumberWithError(value, "GB").number;
  } catch {
    check.addIssue({ code: "custom", message: "not a UK phone number" });
    return z.NEVER;
  }
});
const postcode = z
  .string()
  .regex(/^[A-Za-z]{1,2}\d[A-Za-z\d]? ?\d[A-Za-z]{2}$/)
  .transform((value) => {
    const compact = value.replace(/\s+/g, "").toUpperCase();
    return `${compact.slice(0, -3)} ${compact.slice(-3)}`;
  });
const encodeCursor = (row) => Buffer.from(JSON.stringify([row.createdAt, row.id])).toString("base64url");
const decodeCursor = (cursor) => JSON.parse(Buffer.from(cursor, "base64url").toString());

const selectContact = db
  .select({ ...contactColumns, assignment: assignments })
  .from(contacts)
  .leftJoin(
    assignments,
    and(
      eq(assignments.organisationId, contacts.organisationId),
      eq(assignments.contactId, contacts.id),
      isNull(assignments.supersededAt),
    ),
  )
  .where(and(eq(contacts.organisationId, sql.placeholder("org")), eq(contacts.id, sql.placeholder("id"))))
  .prepare("select_contact");

// One prepared page query per shape: with or without a category, first page or after a cursor.
const pageQueries = new Map();
for (const byCategory of [false, true]) {
  for (const afterCursor of [false, true]) {
    const conditions = [eq(contacts.organisationId, sql.placeholder("org"))];
    if (byCategory) conditions.push(eq(contacts.activeCategory, sql.placeholder("category")));
    if (afterCursor) {
      conditions.push(
        sql`(${contacts.createdAt}, ${contacts.id}) < (${sql.placeholder("createdAt")}::timestamptz, ${sql.placeholder("id")}::uuid)`,
      );
    }
    const name = `list_contacts_${byCategory}_${afterCursor}`;
    const query = db
      .select(contactColumns)
      .from(contacts)
      .where(and(...conditions))
      .orderBy(desc(contacts.createdAt), desc(contacts.id))
      .limit(sql.placeholder("fetch"))
      .prepare(name);
    pageQueries.set(`${byCategory}/${afterCursor}`, query);
  }
}

const contactsRouter = t.router({
  get: authed.input(z.object({ id: z.uuid() })).query(async ({ ctx, input }) => {
    const [row] = await selectContact.execute({ org: ctx.principal.organisationId, id: input.id });
    if (!row) throw new TRPCError({ code: "NOT_FOUND", message: "no such contact" });
    const { assignment, ...contact } = row;
    return { ...withGroup(contact), activeAssignment: assignment };
  }),

  list: authed
    .input(z.object({ category: category.optional(), cursor: z.string().max(400).optional(), limit: z.number().int().min(1).max(100).default(50) }))
    .query(async ({ ctx, input }) => {
      const [createdAt, id] = input.cursor ? decodeCursor(input.cursor) : [];
      const query = pageQueries.get(`${Boolean(input.category)}/${Boolean(input.cursor)}`);
      const rows = await query.execute({
        org: ctx.principal.organisationId,
        category: input.category,
        createdAt,
        id,
        fetch: input.limit + 1,
      });
      const items = rows.slice(0, input.limit).map(withGroup);
      return { items, nextCursor: rows.length > input.limit ? encodeCursor(items[items.length - 1]) : null };
    }),

  create: authed
    .input(
      z.object({
        firstName: z.string().max(200).optional(),
        lastName: z.string().max(200).optional(),
        email: z.email().max(320).transform((value) => value.toLowerCase()).optional(),
        phone: ukPhone.optional(),
        postcode: postcode.optional(),
        category: category.optional(),
        reason: z.string().max(500).optional(),
      }),
    )
    .mutation(async ({ ctx, input }) => {
      const { category: chosen, reason, ...fields } = input;
      try {
        return await db.transaction(async (tx) => {
          const [contact] = await tx
            .insert(contacts)
            .values({ ...fields, organisationId: ctx.principal.organisationId, activeCategory: chosen ?? null })
            .returning(contactColumns);
          let activeAssignment = null;
          if (chosen) {
            [activeAssignment] = await tx
              .insert(assignments)
              .values({
                organisationId: ctx.principal.organisationId,
                contactId: contact.id,
                category: chosen,
                assignedBy: ctx.principal.userId,
                reason,
              })
              .returning();
          }
          await audit(tx, ctx, "contacts.create", contact.id, Object.keys(input).sort());
          return { ...withGroup(contact), activeAssignment };
        });
      } catch (error) {
        if (error?.cause?.code === "23505" || error?.code === "23505") {
          throw new TRPCError({ code: "CONFLICT", message: "a contact with this email exists" });
        }
        throw error;
      }
    }),

  assignCategory: authed
    .input(z.object({ id: z.uuid(), category, reason: z.string().max(500).optional() }))
    .mutation(({ ctx, input }) =>
      db.transaction(async (tx) => {
        const org = ctx.principal.organisationId;
        const [contact] = await tx
          .select({ id: contacts.id, category: contacts.activeCategory })
          .from(contacts)
          .where(and(eq(contacts.organisationId, org), eq(contacts.id, input.id)))
          .for("update");
        if (!contact) throw new TRPCError({ code: "NOT_FOUND", message: "no such contact" });
        const active = and(eq(assignments.organisationId, org), eq(assignments.contactId, input.id), isNull(assignments.supersededAt));
        if (contact.category === input.category) {
          const [current] = await tx.select().from(assignments).where(active);
          await audit(tx, ctx, "contacts.assignCategory", input.id, []);
          return current;
        }
        const now = new Date();
        await tx.update(assignments).set({ supersededAt: now }).where(active);
        await tx.update(contacts).set({ activeCategory: input.category, updatedAt: now })
          .where(and(eq(contacts.organisationId, org), eq(contacts.id, input.id)));
        const [assignment] = await tx
          .insert(assignments)
          .values({ organisationId: org, contactId: input.id, category: input.category, assignedAt: now, assignedBy: ctx.principal.userId, reason: input.reason })
          .returning();
        await audit(tx, ctx, "contacts.assignCategory", input.id, ["category"]);
        return assignment;
      }),
    ),
});

const appRouter = t.router({ contacts: contactsRouter });

// WORKERS processes share the port through node:cluster, as NurtureHub's --workers do.
const port = Number(process.env.PORT || 3000);
const workers = Number(process.env.WORKERS || 1);
if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  createHTTPServer({ router: appRouter, createContext }).listen(port, "127.0.0.1", () => {
    console.log(`reference listening on http://127.0.0.1:${port} (pid ${process.pid})`);
  });
}
// Exit on a signal through process.exit, so `node --cpu-prof` writes its profile.
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
