// @tidings/client: typings for the events of a tidings schema.
//
// `generated/events.ts` is written by tidings-codegen from `schema/events.json`; regenerate it
// with `TIDINGS_BLESS=1 cargo test --test codegen` from the repository root.
export * from "./generated/events.js";
export * from "./types.js";
