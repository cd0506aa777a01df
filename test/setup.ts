// @peculiar/x509 needs the Reflect metadata API before it is first imported.
import 'reflect-metadata';
