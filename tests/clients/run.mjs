// Runs one scenario of Tile38's Node clients against a geoserver and prints its results as JSON.
// Usage: node run.mjs <port> <scenario>. Driven by tests/server/test_node_clients.py, which
// compares the printed values with what redis-py reads from the same server.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Tile38: TS } = require('@iwpnd/tile38-ts');  // tile38-ts (ioredis, JSON mode)
const NodeTile38 = require('tile38');                 // node-tile38 (node-redis 3)

const port = Number(process.argv[2]);
const scenario = process.argv[3];
const strip = ({ elapsed, ...rest }) => rest;  // elapsed differs per call

const tsClient = () => new TS(`redis://127.0.0.1:${port}`);
const ntClient = () => new NodeTile38({ host: '127.0.0.1', port, logger: { error() {}, warn() {}, log() {} } });

const scenarios = {
  // tile38-ts: FIELD values as JSON (number, string, object), read back with GET WITHFIELDS.
  async 'ts-fields'() {
    const t = tsClient();
    try {
      const set = await t.set('nodefleet', 'truck1')
        .fields({ speed: 90, name: 'alpha', info: { axles: 3, tags: ['a'] } })
        .point(33.5, -112.2).exec();
      const get = await t.get('nodefleet', 'truck1').withFields().asObject();
      return { set: strip(set), get: strip(get) };
    } finally { await t.quit(); }
  },
  // tile38-ts: JSET/JGET/JDEL as its own json test does (plain and RAW).
  async 'ts-json'() {
    const t = tsClient();
    try {
      await t.set('nodejson', 'doc').object({ type: 'Point', coordinates: [1, 2, 3] }).exec();
      const jset = await t.jSet('nodejson', 'doc', 'coordinates.1', 1);
      const jdel = await t.jDel('nodejson', 'doc', 'coordinates.2');
      const raw = await t.jGet('nodejson', 'doc', 'coordinates.1', 'RAW');
      const whole = await t.jGet('nodejson', 'doc');
      // JSET on a new id stores a JSON document (a string object), as Tile38 does.
      const rawSet = await t.jSet('nodejson', 'cfg', 'props', '{"n":[1,2]}', 'RAW');
      const sub = await t.jGet('nodejson', 'cfg', 'props.n');
      let missing;
      try { await t.jGet('nodejson', 'nosuch', 'a'); } catch (e) { missing = `${e.name}: ${e.message}`; }
      return { jset: strip(jset), jdel: strip(jdel), raw: strip(raw), whole: strip(whole),
        rawSet: strip(rawSet), sub: strip(sub), missing };
    } finally { await t.quit(); }
  },
  // tile38-ts: SEARCH on string objects with WHERE ranges and WHERE expressions (whereExpr).
  async 'ts-search'() {
    const t = tsClient();
    try {
      await t.set('nodesearch', 'truck1').string('a').exec();
      await t.set('nodesearch', 'truck2').fields({ maxSpeed: 120 }).string('b').exec();
      await t.set('nodesearch', 'truck3').fields({ maxSpeed: 100, maxWeight: 1000 }).string('c').exec();
      const all = await t.search('nodesearch').asStringObjects();
      const range = await t.search('nodesearch').noFields().where('maxSpeed', 100, 120).asStringObjects();
      const expr = await t.search('nodesearch').noFields()
        .whereExpr('maxSpeed >= 100 && maxSpeed <= 130 && maxWeight === 1000').asIds();
      const exprNone = await t.search('nodesearch').whereExpr('maxSpeed == 10').asCount();
      const count = await t.search('nodesearch').match('b*').asCount()  // SEARCH MATCH tests the string value;
      let bad;  // a broken expression: a Tile38Error on the client, the connection keeps serving
      try { await t.search('nodesearch').whereExpr('maxSpeed >').asCount(); } catch (e) { bad = `${e.name}: ${e.message}`; }
      const after = strip(await t.ping());
      return { all: strip(all), range: strip(range), expr: strip(expr), exprNone: strip(exprNone),
        count: strip(count), bad, after };
    } finally { await t.quit(); }
  },
  // tile38-ts's quit test: quit twice, then force quit twice; QUIT in JSON mode may close unanswered.
  async 'ts-quit'() {
    const t = tsClient();
    const ping = strip(await t.ping());
    await t.quit();
    await t.quit();
    const status = t.client.redis.status;  // ioredis: 'end' once the server closed
    const f = tsClient();
    const ping2 = strip(await f.ping());
    await f.quit(true);
    await f.quit(true);
    return { ping, ping2, quit: 'resolved', status };
  },
  // node-tile38: CONFIG GET/SET/REWRITE, sent as one token ("CONFIG GET").
  async 'nt-config'() {
    const c = ntClient();
    try {
      const before = await c.configGet('keepalive');
      const set = await c.configSet('keepalive', '77');
      const after = await c.configGet('keepalive');
      const rewrite = await c.configRewrite();
      let bad;
      try { await c.configSet('nosuchprop', '1'); } catch (e) { bad = e.message; }
      return { before, set, after, rewrite, bad };
    } finally { await c.quit(); }
  },
  // node-tile38: SERVER (its `server()` returns the stats object) and PING.
  async 'nt-server'() {
    const c = ntClient();
    const out = { ping: await c.ping(), stats: await c.server() };
    out.quit = await c.quit();  // node-redis 3 resolves QUIT when the server closes
    out.connected = c.client.connected;
    return out;
  },
  // node-tile38: NEARBY with DISTANCE around a point, plus a COUNT.
  async 'nt-nearby'() {
    const c = ntClient();
    try {
      await c.set('nodenear', 'near', [33.462, -112.268], { speed: 5 });
      await c.set('nodenear', 'mid', [33.47, -112.268]);
      await c.set('nodenear', 'far', [34.0, -112.268]);
      const res = await c.nearbyQuery('nodenear').distance().point(33.462, -112.268, 6000).execute();
      const count = await c.nearbyQuery('nodenear').point(33.462, -112.268, 6000).count().execute();
      return { res, count };
    } finally { await c.quit(); }
  },
};

const run = scenarios[scenario];
if (!run) {
  process.stderr.write(`unknown scenario ${scenario}; known: ${Object.keys(scenarios).join(' ')}\n`);
  process.exit(2);
}
try {
  process.stdout.write(JSON.stringify(await run()) + '\n');
  process.exit(0);
} catch (e) {
  process.stderr.write(`${scenario} failed: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
}
