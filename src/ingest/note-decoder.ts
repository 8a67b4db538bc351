import avro from 'avsc';
import { ErrorCodes, InternalError, InvalidRecordError, RouterError } from '../errors.js';
import { avroType } from '../schemas.js';
import { checkValue, confluentFrame, decodeNote, type AvroWriter, type DecodeOptions } from './decode.js';
import type { ClinicalNote } from './note.js';
import type { SchemaRegistryClient } from './schema-registry.js';

/** Writers kept by schema id; a deployment sees a handful. */
const MAX_WRITERS = 1000;

/**
 * Decodes input records, resolving Confluent-framed Avro through the Schema
 * Registry: the id in each record's header names its writer schema, which is
 * fetched once (cached by the client), checked, and resolved to the router's
 * reader schema (schemas/clinical-note.avsc) with avsc's schema resolution,
 * so a writer that added a field with a default, or dropped an optional one,
 * still decodes. Without a registry (or for JSON and raw Avro) it is
 * `decodeNote` as it was.
 *
 * Failures keep their meaning for the service: InvalidRecordError and a
 * non-retriable SchemaRegistryError (SCHEMA_NOT_FOUND) go to the DLQ; a
 * retriable SchemaRegistryError (SCHEMA_REGISTRY_UNAVAILABLE) leaves the
 * record uncommitted, so it is redelivered once the registry answers.
 */
export class NoteDecoder {
  /** Resolved writers and, since a registry schema never changes, writers known to be unusable. */
  private readonly writers = new Map<number, Promise<AvroWriter>>();

  constructor(
    private readonly options: DecodeOptions,
    private readonly registry?: SchemaRegistryClient,
  ) {}

  /** True when records are read through the registry. */
  get resolvesWriterSchemas(): boolean {
    return this.registry !== undefined && this.options.format === 'avro' && this.options.avroWireFormat === 'confluent';
  }

  async decode(value: Buffer | null): Promise<ClinicalNote> {
    if (!this.resolvesWriterSchemas) return decodeNote(value, this.options);
    // Size and header first: an oversized or unframed record costs no registry request.
    const frame = confluentFrame(checkValue(value, this.options.maxNoteBytes));
    const writer = await this.writerFor(frame.schemaId);
    return decodeNote(value, { ...this.options, writer });
  }

  private writerFor(schemaId: number): Promise<AvroWriter> {
    let pending = this.writers.get(schemaId);
    if (pending === undefined) {
      pending = this.resolveWriter(schemaId);
      this.writers.set(schemaId, pending);
      if (this.writers.size > MAX_WRITERS) {
        const oldest = this.writers.keys().next();
        if (oldest.done !== true) this.writers.delete(oldest.value);
      }
      const settled = pending;
      // Only the schema's own verdict is kept: registry failures (down, 404) are asked again next time.
      settled.catch((err: unknown) => {
        if (!(err instanceof RouterError && err.code === ErrorCodes.SCHEMA_INCOMPATIBLE) && this.writers.get(schemaId) === settled)
          this.writers.delete(schemaId);
      });
    }
    return pending;
  }

  private async resolveWriter(schemaId: number): Promise<AvroWriter> {
    if (this.registry === undefined) throw new InternalError('no schema registry configured', { stage: 'decode' });
    const registered = await this.registry.schemaById(schemaId);
    const incompatible = (why: string): InvalidRecordError =>
      new InvalidRecordError(ErrorCodes.SCHEMA_INCOMPATIBLE, `writer schema ${schemaId} ${why}`, { stage: 'decode' });
    if (registered.schemaType.toUpperCase() !== 'AVRO') throw incompatible(`is a ${registered.schemaType} schema, not Avro`);
    if (registered.references > 0) throw incompatible('uses schema references, which the router does not resolve');
    let type: avro.Type;
    try {
      type = avro.Type.forSchema(JSON.parse(registered.schema) as avro.Schema);
    } catch (err) {
      throw incompatible(`is not a valid Avro schema (${shortReason(err)})`);
    }
    const reader = avroType('clinical-note');
    let resolver: avro.Resolver;
    try {
      resolver = reader.createResolver(type);
    } catch (err) {
      throw incompatible(`cannot be read as io.bioner.router.ClinicalNote (${shortReason(err)})`);
    }
    return { schemaId, type, resolver };
  }
}

/** avsc's reason, one line and short: it names types and fields of the schema, never record content. */
function shortReason(err: unknown): string {
  const message = err instanceof Error ? err.message : 'unknown';
  const line = message.split('\n')[0];
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
}
