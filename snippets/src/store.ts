/**
 * The snippets the UI shows: the last listing the server sent, or why it could not be
 * loaded. The palette and the panel share it; every refresh asks the server again,
 * which reads the snippet folders on each request.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { SnippetsClient } from './api';
import { IListing, INewSnippet, ISnippet } from './types';

export class SnippetStore {
  constructor(readonly client: SnippetsClient) {}

  /** The last listing loaded (empty until the first refresh). */
  get listing(): IListing {
    return this._listing;
  }

  /** Why the last refresh failed, or null. */
  get error(): string | null {
    return this._error;
  }

  get loaded(): boolean {
    return this._loaded;
  }

  /** Emitted after every refresh, successful or not, and after saving or deleting. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Load the snippets again; a failure keeps the last listing and sets `error`. */
  refresh(): Promise<IListing> {
    if (!this._pending) {
      this._pending = this.client
        .list()
        .then(
          listing => {
            this._listing = listing;
            this._error = null;
            this._loaded = true;
            return listing;
          },
          (error: unknown) => {
            this._error = error instanceof Error ? error.message : String(error);
            throw error;
          }
        )
        .finally(() => {
          this._pending = null;
          this._changed.emit();
        });
    }
    return this._pending;
  }

  async save(snippet: INewSnippet): Promise<ISnippet> {
    const saved = await this.client.save(snippet);
    await this.refresh().catch(() => undefined);
    return saved;
  }

  async remove(id: string): Promise<void> {
    await this.client.remove(id);
    await this.refresh().catch(() => undefined);
  }

  private _listing: IListing = { snippets: [], problems: [] };
  private _error: string | null = null;
  private _loaded = false;
  private _pending: Promise<IListing> | null = null;
  private _changed = new Signal<this, void>(this);
}
